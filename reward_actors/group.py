"""A thin group over N replicas of one reward actor: cache lookup, spread, gather, retry once.

A replica that dies mid-batch is restarted by Ray (``max_restarts``) and its chunk is sent once
more; if that fails too, the family is lost: ``RewardFamilyLost`` stops the caller, unless the
family's config says ``continue_if_lost``, and then the chunk's scenes are masked with the reason.
(A scorer that raises is not a lost family: the actor masks just the scenes it raises on.) Each
scene's score is returned exactly once, in the batch's order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .actors import ACTORS, is_scorer_error
from .cache import ScoreCache, scene_key
from .types import SceneBatch, ScoreResult


class RewardFamilyLost(RuntimeError):
    """A reward family's actor died again after a restart: its scores are gone for this batch."""


class RewardGroup:
    def __init__(self, family: str, cfg, cache: ScoreCache | None = None):
        import ray

        if family not in ACTORS:
            raise ValueError(f"unknown reward family {family!r}; choose one of {', '.join(ACTORS)}")
        remote = ray.remote(ACTORS[family]).options(
            num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, max_restarts=cfg.max_restarts, max_task_retries=0
        )
        self.family, self.cfg = family, cfg
        self.handles = [remote.remote(cfg) for _ in range(cfg.replicas)]
        self.name, self.version = self._get(self.handles[0].model.remote(), "model()")
        self.cache = cache if cache is not None else ScoreCache()
        self.retries = 0  # chunks sent a second time after an actor died
        self.failures = 0  # chunks masked because the retry failed too
        self.scored = 0  # scenes sent to the actors (cache misses)

    def score(self, batch: SceneBatch) -> ScoreResult:
        n = len(batch)
        keys = [scene_key(batch, i) for i in range(n)]
        out = ScoreResult(np.full(n, np.nan), np.zeros(n, bool), [None] * n, self.name, self.version)
        todo = []
        for i, k in enumerate(keys):
            hit = self.cache.get(self.version, k)
            if hit is None:
                todo.append(i)
            else:
                out.scores[i], out.valid[i], out.reasons[i] = hit
        chunks = [c.tolist() for c in np.array_split(np.array(todo, int), min(len(self.handles), len(todo))) if len(c)] if todo else []
        # fewer chunks than handles when little is left: the spare handles get nothing
        pending = [(h, c, h.score.remote(batch.subset(c))) for h, c in zip(self.handles, chunks, strict=False)]
        self.scored += len(todo)
        for handle, chunk, ref in pending:
            res = self._get_or_retry(handle, chunk, batch, ref)
            for j, i in enumerate(chunk):
                out.scores[i], out.valid[i], out.reasons[i] = res.scores[j], res.valid[j], res.reasons[j]
                if not is_scorer_error(res.reasons[j]):  # a model's failure may not repeat: never cached
                    self.cache.put(self.version, keys[i], float(res.scores[j]), bool(res.valid[j]), res.reasons[j])
            for k, v in res.counts.items():
                out.counts[k] = out.counts.get(k, 0) + v
        return out

    def _get_or_retry(self, handle, chunk: list[int], batch: SceneBatch, ref) -> ScoreResult:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        try:
            return self._get(ref, "score()")
        except RayActorError:
            self.retries += 1
        try:
            ray.get(handle.pid.options(max_task_retries=-1).remote(), timeout=60)  # Ray resends it until the replica is back
            return self._get(handle.score.remote(batch.subset(chunk)), "score() again")
        except (RayActorError, GetTimeoutError) as e:
            self.failures += 1
            if not self.cfg.continue_if_lost:
                raise RewardFamilyLost(f"the {self.family} reward actor died twice ({type(e).__name__}): the family is lost; set "
                                       f"rewards.{self.family}.continue_if_lost=True to train on without it (its scenes masked)") from e  # fmt: skip
            return ScoreResult.masked(len(chunk), f"reward actor died twice: {type(e).__name__}", self.name, self.version)

    def _get(self, ref, what: str) -> Any:
        """``ray.get`` with the family's timeout; past it, an error naming the call and the field."""
        import ray
        from ray.exceptions import GetTimeoutError

        try:
            return ray.get(ref, timeout=self.cfg.call_timeout_s)
        except GetTimeoutError as e:
            raise TimeoutError(f"the {self.family} reward actor did not answer {what} within {self.cfg.call_timeout_s:.0f} s "
                               f"(rewards.{self.family}.call_timeout_s); look at its log, or raise the timeout") from e  # fmt: skip

    def pids(self) -> list[int]:
        import ray

        return ray.get([h.pid.remote() for h in self.handles])
