"""Hybrid ranks: every rollout replica is also a data-parallel learner rank, so candidate
features are learned from where they were made (the hybrid engine of veRL; Sheng et al. 2024,
HybridFlow, arXiv 2409.19256). ``ServiceConfig.topology = "hybrid"`` selects it.

A step, as the driver sees it:

    light = group.rollout(prompt_sets, noise_seed, selection_seed)  # ranks keep the features
    score_rollouts(light, ...)                                       # frames -> reward actors
    metrics = group.update(light)     # credit here; keys + advantages out; DeepSpeed all-reduces

What crosses processes: the prompt sets in; rollouts without features back (frames, selections,
log-probs); each rank's (rollout, scene) keys and advantages out. Gradients move in DeepSpeed's
all-reduce (gloo on CPU, NCCL on GPU); every rank steps to the same weights, which its own
rollout policy then loads, so nothing is broadcast.

The ranks form one torch.distributed world: if one dies, the world is gone. The group then
raises ``LearnerLost``; the driver calls ``restart`` (a new world of fresh actors) and resumes
from the last checkpoint, whose ZeRO shards every rank wrote, and runs the steps after it again.
"""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from inflvg.prompts import PromptSet
from inflvg.rollout import Rollout, Transition
from inflvg.update import Shard, credit
from learner.actor import Learner
from learner.config import LearnerConfig
from rollout_workers.config import RolloutConfig
from rollout_workers.group import _chunks
from rollout_workers.worker import RolloutWorker

Key = tuple[int, int, int]  # (group_id, rollout_index, scene) of one transition


def light(r: Rollout) -> Rollout:
    """``r`` as it leaves its rank: every transition keeps its scene, selection and log-prob, and
    its candidate features and prompt tokens stay behind (empty arrays of the same width)."""
    def strip(t: Transition) -> Transition:
        return replace(t, features=np.zeros((0, t.features.shape[-1]), np.float32),
                       prompt_tokens=np.zeros((0, t.prompt_tokens.shape[-1]), np.float32), prompt_mask=np.zeros(0, bool))  # fmt: skip

    return replace(r, transitions=[strip(t) for t in r.transitions])


class HybridRank:
    """One process: a ``RolloutWorker`` and a ``Learner`` that is rank ``rank`` of the world.
    Plain class; ``HybridGroup`` makes it a Ray actor. ``setup`` joins the world."""

    def __init__(self, rollout_cfg: RolloutConfig, learner_cfg: LearnerConfig, init_weights: dict | None = None):
        self.rollout_cfg, self.learner_cfg, self.init_weights = rollout_cfg, learner_cfg, init_weights
        self.kept: dict[tuple[int, int], Rollout] = {}  # the last rollout call's records, features included

    def address(self) -> tuple[str, int]:
        """(this node's IP, a free port): rank 0's rendezvous for the world."""
        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            return ray.util.get_node_ip_address(), s.getsockname()[1]

    def setup(self, rank: int, world: int, master: tuple[str, int]) -> int:
        """Join the world as ``rank`` (every rank at once: DeepSpeed's rendezvous waits for all) -> version."""
        os.environ.update(RANK=str(rank), LOCAL_RANK="0", WORLD_SIZE=str(world), MASTER_ADDR=master[0], MASTER_PORT=str(master[1]))
        self.rank = rank
        self.worker = RolloutWorker(self.rollout_cfg, self.learner_cfg.policy)
        self.learner = Learner(self.learner_cfg, self.init_weights)  # seeded or given: every rank starts from the same weights
        return self._take_weights()

    def _take_weights(self, rollback: bool = False) -> int:
        version, weights = self.learner.weights()
        self.worker.set_weights(version, weights, rollback)
        return version

    def rollout(self, prompt_sets: list[PromptSet], noise_seed: int, selection_seed: int, first_index: int) -> list[Rollout]:
        """``RolloutWorker.rollout``, returned ``light``: the features stay here for ``update``."""
        full = self.worker.rollout(prompt_sets, noise_seed, selection_seed, first_index) if prompt_sets else []
        self.kept = {(r.group_id, r.rollout_index): r for r in full}
        return [light(r) for r in full]

    def _shard(self, keys: list[Key], advantages: list[float], counts: tuple[int, ...]) -> Shard:
        by_key = {(g, i, t.scene): t for (g, i), r in self.kept.items() for t in r.transitions}
        missing = [k for k in keys if k not in by_key]
        if missing:
            raise KeyError(f"rank {self.rank} holds no transition {missing[0]} (group, rollout, scene): update the rollouts of its last call")
        return Shard([by_key[k] for k in keys], torch.tensor(advantages, dtype=torch.float32), counts, self.rank)

    def update(self, keys: list[Key], advantages: list[float], counts: tuple[int, ...]) -> dict[str, float]:
        """This rank's part of the update (``Learner.update_shard``); the rollout policy then takes the new weights."""
        metrics = self.learner.update_shard(self._shard(keys, advantages, counts))
        self._take_weights()
        return metrics

    def gradients(self, keys: list[Key], advantages: list[float], counts: tuple[int, ...]) -> dict[str, torch.Tensor]:
        return self.learner.gradients(self._shard(keys, advantages, counts))

    def optimizer_state_bytes(self) -> int:
        return self.learner.optimizer_state_bytes()

    def weights(self) -> tuple[int, dict]:
        return self.learner.weights()

    def acting_version(self) -> int:
        return self.worker.version()

    def save_checkpoint(self, root: str, driver_state: dict | None = None) -> str:
        return self.learner.save_checkpoint(root, driver_state)

    def load_checkpoint(self, path: str) -> int:
        self.learner.load_checkpoint(path)
        return self._take_weights(rollback=True)

    def pid(self) -> int:
        return os.getpid()


class HybridGroup:
    """The driver's handle on W hybrid ranks (W = ``rollout.replicas``): spread, gather, credit, update.
    ZeRO 0-2 (``ServiceConfig`` refuses ZeRO-3 for hybrid ranks)."""

    def __init__(self, rollout_cfg: RolloutConfig, learner_cfg: LearnerConfig, timeout_s: float, init_weights: dict | None = None):
        self.cfg, self.learner_cfg, self.timeout_s, self.init_weights = rollout_cfg, learner_cfg, timeout_s, init_weights
        self.version, self.reissued, self.restarts = -1, 0, 0
        self.bounds: list[tuple[int, int]] = []  # prompt sets of the last rollout, per rank
        self._start()

    def _start(self) -> None:
        import ray

        remote = ray.remote(HybridRank).options(num_cpus=self.cfg.num_cpus, num_gpus=self.cfg.num_gpus, max_restarts=0)
        init = None if self.init_weights is None else ray.put(self.init_weights)
        self.handles: list[Any] = [remote.remote(self.cfg, self.learner_cfg, init) for _ in range(self.cfg.replicas)]
        master = self._get(self.handles[0].address.remote(), "the rendezvous address")
        world = len(self.handles)
        self.version = min(self._get([h.setup.remote(r, world, master) for r, h in enumerate(self.handles)], "setup"))

    def restart(self) -> None:
        """A new world: every rank killed and started again (a world that lost a rank cannot go on)."""
        import ray

        for h in self.handles:
            ray.kill(h, no_restart=True)
        self.restarts += 1
        self._start()

    def _get(self, refs, what: str) -> Any:
        from .recovery import learner_get

        return learner_get(refs, f"{what} on the hybrid ranks", self.timeout_s)

    def rollout(self, prompt_sets: list[PromptSet], noise_seed: int, selection_seed: int) -> list[Rollout]:
        """P prompt sets -> P * G light Rollouts, grouped by prompt set in input order."""
        self.bounds = _chunks(len(prompt_sets), len(self.handles))
        self.bounds += [(len(prompt_sets), len(prompt_sets))] * (len(self.handles) - len(self.bounds))  # idle ranks
        refs = [h.rollout.remote(list(prompt_sets[a:b]), noise_seed, selection_seed, a) for h, (a, b) in zip(self.handles, self.bounds, strict=True)]
        return [r for chunk in self._get(refs, "a rollout call") for r in chunk]

    def shares(self, rollouts: list[Rollout], cfg) -> tuple[list[tuple[list[Key], list[float]]], tuple[int, ...], dict]:
        """Credit over the light rollouts (``inflvg.update.credit``) -> per rank (keys, advantages), the counts, metrics."""
        used, adv, metrics = credit(rollouts, cfg)
        owner = {id(t): (r.group_id, r.rollout_index) for r in rollouts for t in r.transitions}
        rank_of = [next(k for k, (a, b) in enumerate(self.bounds) if a <= owner[id(t)][0] < b) for t in used]
        if rank_of != sorted(rank_of):
            raise RuntimeError("the credit's order must visit the ranks in turn: groups are cut into contiguous chunks")
        out: list[tuple[list[Key], list[float]]] = [([], []) for _ in self.handles]
        for t, a, k in zip(used, adv.tolist(), rank_of, strict=True):
            out[k][0].append((*owner[id(t)], t.scene))
            out[k][1].append(a)
        return out, tuple(len(keys) for keys, _ in out), metrics

    def update(self, rollouts: list[Rollout]) -> dict[str, float]:
        """One GRPO update over every rank's features -> metrics (the credit's and the ranks', weighted by transitions)."""
        shares, counts, metrics = self.shares(rollouts, self.learner_cfg.update)
        if not sum(counts):
            return metrics | {"version": float(self.version)}
        ranked = self._get([h.update.remote(k, a, counts) for h, (k, a) in zip(self.handles, shares, strict=True)], "an update")
        self.version = int(ranked[0]["version"])
        keys = {k for m in ranked for k in m} - {"version", "optimizer_steps", "seconds"}
        weight = np.asarray(counts, float) / sum(counts)
        merged = {k: float(sum(w * m.get(k, 0.0) for w, m in zip(weight, ranked, strict=True))) for k in keys}
        return metrics | merged | {"optimizer_steps": ranked[0]["optimizer_steps"], "version": float(self.version),
                                   "seconds": max(m["seconds"] for m in ranked)}  # fmt: skip

    def gradients(self, rollouts: list[Rollout], cfg) -> dict[str, torch.Tensor]:
        """The all-reduced gradient of the update's first minibatch (rank 0's copy; every rank holds the same)."""
        shares, counts, _ = self.shares(rollouts, cfg)
        return self._get([h.gradients.remote(k, a, counts) for h, (k, a) in zip(self.handles, shares, strict=True)], "gradients")[0]

    def weights(self) -> tuple[int, dict]:
        """(version, state_dict) of rank 0; every rank is asked, as ZeRO gathers the fp32 weights collectively."""
        return self.rank_weights()[0]

    def rank_weights(self) -> list[tuple[int, dict]]:
        return self._get([h.weights.remote() for h in self.handles], "weights")

    def save_checkpoint(self, root: str, driver_state: dict | None = None) -> str:
        """Every rank writes its ZeRO shard into one checkpoint -> its location (rank 0's answer)."""
        return self._get([h.save_checkpoint.remote(root, driver_state) for h in self.handles], "save_checkpoint")[0]

    def load_checkpoint(self, path: str) -> int:
        self.version = min(self._get([h.load_checkpoint.remote(path) for h in self.handles], f"load_checkpoint({path})"))
        return self.version

    def optimizer_state_bytes(self) -> list[int]:
        return self._get([h.optimizer_state_bytes.remote() for h in self.handles], "optimizer_state_bytes")

    def pids(self) -> list[int]:
        return self._get([h.pid.remote() for h in self.handles], "pid")
