"""Start the roles of a training run and wire them together (only cluster/ knows them all).

Two topologies (``ServiceConfig.topology``): 'separate', rollout replicas and one learner actor,
the rollouts travelling to it with their candidate features and new weights pushed back; and
'hybrid', each rollout replica also a learner rank (``cluster.hybrid``). ``Roles`` gives the
driver one set of calls for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inflvg.policy import load_policy
from inflvg.rollout import Rollout
from reward_actors.config import RewardConfig
from reward_actors.group import RewardGroup
from rollout_workers.group import RolloutGroup

from .config import ServiceConfig
from .fence import FencedLearner
from .hybrid import HybridGroup
from .recovery import learner_get, wait_for_learner


@dataclass
class Roles:
    rollouts: RolloutGroup | HybridGroup
    rewards: dict  # family -> RewardGroup
    learner: Any  # 'separate': Ray actor handle of a Learner (ray's stubs type a handle's methods as Never); 'hybrid': None
    timeout_s: float  # a learner call's limit (ServiceConfig.call_timeout_s)
    max_restarts: int = 2  # worlds a hybrid run may start after losing one (ServiceConfig.learner_max_restarts)

    @property
    def hybrid(self) -> bool:
        return isinstance(self.rollouts, HybridGroup)

    def _get(self, ref, what: str) -> Any:
        return learner_get(ref, what, self.timeout_s)

    def update(self, rollouts: list[Rollout], what: str) -> dict[str, float]:
        """One GRPO update on scored rollouts -> metrics."""
        if isinstance(self.rollouts, HybridGroup):
            return self.rollouts.update(rollouts)
        return self._get(self.learner.update.remote(rollouts), what)

    def weights(self) -> tuple[int, dict]:
        """(version, state_dict) of the learner (rank 0 of a hybrid world)."""
        if isinstance(self.rollouts, HybridGroup):
            return self.rollouts.weights()
        return self._get(self.learner.weights.remote(), "weights")

    def push(self, rollback: bool = False) -> dict | None:
        """The learner's weights to the rollout replicas -> the weights pushed; None for hybrid ranks,
        which act with their own learner's weights already."""
        import ray

        if isinstance(self.rollouts, HybridGroup):
            return None
        version, weights = self.weights()
        self.rollouts.sync(version, ray.put(weights), rollback)
        return weights

    def save_checkpoint(self, root: str, driver_state: dict) -> str:
        if isinstance(self.rollouts, HybridGroup):
            return self.rollouts.save_checkpoint(root, driver_state)
        return self._get(self.learner.save_checkpoint.remote(root, driver_state), "save_checkpoint")

    def load_checkpoint(self, path: str) -> int:
        """Restore the learner (every rank) from ``path`` -> its version; the replicas then take its weights."""
        if isinstance(self.rollouts, HybridGroup):
            return self.rollouts.load_checkpoint(path)
        version = self._get(self.learner.load_checkpoint.remote(path), f"load_checkpoint({path})")
        self.push(rollback=True)
        return version

    def recover(self) -> None:
        """After ``LearnerLost``: wait for Ray to restart the learner, or start a new hybrid world."""
        if isinstance(self.rollouts, HybridGroup):
            if self.rollouts.restarts >= self.max_restarts:
                raise RuntimeError(f"the hybrid world was restarted {self.rollouts.restarts} times (ServiceConfig.learner_max_restarts); "
                                   "the run can resume later from its last checkpoint (--resume auto)")  # fmt: skip
            self.rollouts.restart()
        else:
            wait_for_learner(self.learner, self.timeout_s)

    def fault_targets(self) -> dict[str, Any]:
        """role -> the actor a planned fault kills: the first rollout replica, the learner (both rank 0 when hybrid)."""
        learner = self.rollouts.handles[0] if self.hybrid else self.learner
        return {"rollout": self.rollouts.handles[0], "learner": learner}


def reward_groups(cfg: RewardConfig) -> dict:
    return {fam: RewardGroup(fam, getattr(cfg, fam)) for fam, weight in cfg.weights if weight > 0}


def initial_weights(cfg: ServiceConfig) -> dict | None:
    """The weights of ``cfg.init_policy``, checked against the learner's policy config; None: seeded ones."""
    if cfg.init_policy is None:
        return None
    policy = load_policy(cfg.init_policy)
    if policy.cfg != cfg.learner.policy:
        raise ValueError(f"ServiceConfig.init_policy {cfg.init_policy} holds a policy with config {policy.cfg}, the learner's is "
                         f"{cfg.learner.policy}; train with the same --learner.policy.* settings")  # fmt: skip
    return policy.state_dict()


def start_roles(cfg: ServiceConfig) -> Roles:
    import ray

    init = initial_weights(cfg)
    if cfg.topology == "hybrid":
        hybrid = HybridGroup(cfg.rollout, cfg.learner, cfg.call_timeout_s, init)
        return Roles(hybrid, reward_groups(cfg.rewards), None, cfg.call_timeout_s, cfg.learner_max_restarts)
    learner = ray.remote(FencedLearner).options(
        num_cpus=cfg.learner_num_cpus, num_gpus=cfg.learner.num_gpus, resources=dict(cfg.learner_resources),
        max_restarts=cfg.learner_max_restarts, max_task_retries=0,
    ).remote(cfg.learner, init)  # retries are the driver's: it reloads the last checkpoint first (cluster/recovery.py)
    roles = Roles(RolloutGroup(cfg.rollout, cfg.learner.policy), reward_groups(cfg.rewards), learner, cfg.call_timeout_s,
                  cfg.learner_max_restarts)  # fmt: skip
    roles.push()  # the learner's first weights (starting up)
    return roles
