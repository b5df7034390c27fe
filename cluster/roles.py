"""Start the roles of a training run and wire them together (only cluster/ knows them all)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from learner.actor import Learner
from reward_actors.config import RewardConfig
from reward_actors.group import RewardGroup
from rollout_workers.group import RolloutGroup

from .config import ServiceConfig
from .recovery import learner_get


@dataclass
class Roles:
    rollouts: RolloutGroup
    rewards: dict  # family -> RewardGroup
    learner: Any  # Ray actor handle of a Learner (ray's stubs type a handle's methods as Never)


def reward_groups(cfg: RewardConfig) -> dict:
    return {fam: RewardGroup(fam, getattr(cfg, fam)) for fam, weight in cfg.weights if weight > 0}


def start_roles(cfg: ServiceConfig) -> Roles:
    import ray

    learner = ray.remote(Learner).options(
        num_cpus=cfg.learner_num_cpus, num_gpus=cfg.learner.num_gpus, resources=dict(cfg.learner_resources),
        max_restarts=cfg.learner_max_restarts, max_task_retries=0,
    ).remote(cfg.learner)  # retries are the driver's: it reloads the last checkpoint first (cluster/recovery.py)
    rollouts = RolloutGroup(cfg.rollout, cfg.learner.policy)
    version, weights = learner_get(learner.weights.remote(), "its first weights (starting up)", cfg.call_timeout_s)
    rollouts.sync(version, ray.put(weights))
    return Roles(rollouts, reward_groups(cfg.rewards), learner)
