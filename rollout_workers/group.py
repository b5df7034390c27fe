"""A thin group over N rollout actors: versioned weight pushes, spread, gather, re-issue once.

A request of P prompt sets is cut into contiguous chunks, one per replica; each chunk carries
its position in the request, so seeds (and results) do not depend on which replica ran it. If a
replica dies mid-call (or was restarted since the last sync and holds no weights), the group
waits until Ray has restarted it, pushes the current weights to it again and re-issues exactly
that replica's chunk once; a second failure propagates to the caller. The result holds each prompt set's rollouts
exactly once, in input order.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any, TypeAlias

import numpy as np

from inflvg.policy import PolicyConfig
from inflvg.prompts import PromptSet
from inflvg.rollout import Rollout

from .config import RolloutConfig
from .worker import NoWeightsError, RolloutWorker

Call: TypeAlias = Callable[[Any, list[PromptSet], int], Any]  # (handle, prompt_sets chunk, first_index) -> ObjectRef of list[Rollout]


class RolloutGroup:
    def __init__(self, cfg: RolloutConfig, policy_cfg: PolicyConfig):
        import ray

        remote = ray.remote(RolloutWorker).options(
            num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, max_restarts=cfg.max_restarts, max_task_retries=0
        )  # retries are ours: a Ray retry would not know to push the weights again first
        self.cfg = cfg
        self.handles = [remote.remote(cfg, policy_cfg) for _ in range(cfg.replicas)]
        self.version = -1  # weights version every replica holds; -1 before the first sync
        self._weights = None  # ObjectRef of those weights, pushed again to a restarted replica
        self.reissued = 0  # prompt sets sent a second time because their replica died

    def sync(self, version: int, weights_ref, rollback: bool = False) -> None:
        """Push policy weights (an ObjectRef of a state_dict, or the state_dict itself, which is
        put once) to every replica by reference and check each accepted them. ``rollback``: the
        learner was restored to an older version, which the replicas then take."""
        import ray

        ref = weights_ref if isinstance(weights_ref, ray.ObjectRef) else ray.put(weights_ref)
        pending = [h.set_weights.remote(version, ref, rollback) for h in self.handles]  # all replicas load at once
        refused = [i for i, (h, p) in enumerate(zip(self.handles, pending, strict=True)) if not _push(h, version, ref, p, self.cfg.call_timeout_s)]
        if refused:
            raise RuntimeError(
                f"rollout replicas {refused} refused weights version {version}: they hold a newer one; "
                f"versions pushed by sync must never go down"
            )
        self.version, self._weights = version, ref

    def rollout(self, prompt_sets: list[PromptSet], noise_seed: int, selection_seed: int) -> list[Rollout]:
        """P prompt sets -> P * G sampled Rollouts, grouped by prompt set in input order."""
        return self._spread(
            prompt_sets, self.cfg.group_size, lambda h, chunk, first: h.rollout.remote(chunk, noise_seed, selection_seed, first)
        )

    def pids(self) -> list[int]:
        import ray

        return ray.get([h.pid.remote() for h in self.handles])

    def _spread(self, prompt_sets: list[PromptSet], per_set: int, call: Call) -> list[Rollout]:
        """Chunks over replicas, gathered in order -> len(prompt_sets) * per_set Rollouts."""
        if self.version < 0:
            raise RuntimeError("call sync(version, weights_ref) before the first rollout: the replicas hold no weights")
        prompt_sets = list(prompt_sets)
        bounds = _chunks(len(prompt_sets), len(self.handles))  # [(start, stop)] one per busy replica
        pending = [(h, a, b, call(h, prompt_sets[a:b], a)) for h, (a, b) in zip(self.handles, bounds, strict=False)]  # idle replicas get no chunk
        out: list[Rollout] = []
        for h, a, b, ref in pending:
            out += self._get_or_reissue(h, ref, lambda h=h, a=a, b=b: call(h, prompt_sets[a:b], a), b - a)
        if [r.group_id for r in out] != [i for i in range(len(prompt_sets)) for _ in range(per_set)]:
            raise RuntimeError(f"rollout replicas did not return {per_set} rollouts per prompt set, in order")
        return out

    def _get_or_reissue(self, handle, ref, reissue: Callable, n_sets: int) -> list[Rollout]:
        from ray.exceptions import RayActorError

        try:
            return _get(ref, "a rollout call", self.cfg.call_timeout_s)
        except (RayActorError, NoWeightsError):  # died mid-call, or was restarted since the last sync
            self.reissued += n_sets
        if not _push(handle, self.version, self._weights, timeout_s=self.cfg.call_timeout_s):  # a restarted replica starts with no weights
            raise RuntimeError(f"a restarted rollout replica refused weights version {self.version}")
        return _get(reissue(), "a re-issued rollout call", self.cfg.call_timeout_s)  # a second death propagates: the driver decides


def _get(ref, what: str, timeout_s: float) -> Any:
    """``ray.get`` with a timeout that says what did not answer and which field to raise."""
    import ray
    from ray.exceptions import GetTimeoutError

    try:
        return ray.get(ref, timeout=timeout_s)
    except GetTimeoutError as e:
        raise TimeoutError(f"{what} to a rollout replica did not answer within {timeout_s:.0f} s (RolloutConfig.call_timeout_s); "
                           "look at its log, or raise the timeout for a slower generator") from e  # fmt: skip


def _push(handle, version: int, ref, pending=None, timeout_s: float = 1800.0) -> bool:
    """Weights to one replica (``pending``: the set_weights call already made) -> whether it
    accepted them. A replica that died meanwhile gets them once Ray has restarted it."""
    from ray.exceptions import RayActorError

    try:
        return _get(pending if pending is not None else handle.set_weights.remote(version, ref), "a weight push", timeout_s)
    except RayActorError:  # Ray resends the (idempotent) call until it has restarted the replica, or it is dead for good
        return _get(handle.set_weights.options(max_task_retries=-1).remote(version, ref), "a weight push", timeout_s)


def _chunks(n: int, replicas: int) -> list[tuple[int, int]]:
    """Contiguous, balanced [start, stop) ranges of n items over at most ``replicas`` workers."""
    if n == 0:
        return []
    edges = np.linspace(0, n, min(n, replicas) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in pairwise(edges)]
