"""The learner actor of a 'separate' run, fenced: once Ray has restarted it, it answers no call
that reads or changes its state until the driver has seen the restart.

Ray restarts a dead learner on its own (``ServiceConfig.learner_max_restarts``), and can do it
between two driver calls, before the driver has noticed anything. The next call would then reach
a fresh learner (seeded weights, version 0) and the run would train on from there as if nothing
had happened. So a restarted learner raises ``LearnerRestarted`` until the driver calls
``rejoin`` (it saw the loss and restores the last checkpoint next) or ``load_checkpoint``.
"""

from __future__ import annotations

from pathlib import Path

from inflvg.rollout import Rollout
from learner.actor import Learner
from learner.config import LearnerConfig

from .recovery import LearnerRestarted


class FencedLearner(Learner):
    def __init__(self, cfg: LearnerConfig, init_weights: dict | None = None):
        import ray

        super().__init__(cfg, init_weights)
        self.fenced = bool(ray.get_runtime_context().was_current_actor_reconstructed)  # a restart, not the first start

    def _check(self, what: str) -> None:
        if self.fenced:
            raise LearnerRestarted(f"Ray restarted the learner before {what}: it holds seeded weights, not the run's")

    def update(self, rollouts: list[Rollout]) -> dict[str, float]:
        self._check("update")
        return super().update(rollouts)

    def weights(self) -> tuple[int, dict]:
        self._check("weights")
        return super().weights()

    def save_checkpoint(self, root: str | Path, driver_state: dict | None = None) -> str:
        self._check("save_checkpoint")
        return super().save_checkpoint(root, driver_state)

    def load_checkpoint(self, path: str | Path) -> int:
        version = super().load_checkpoint(path)
        self.fenced = False
        return version

    def rejoin(self) -> int:
        """The driver has seen the restart and restores the last checkpoint next -> the version held
        (0: seeded weights, which are a run's state before its first checkpoint)."""
        self.fenced = False
        return self.version
