"""One Ray actor class per reward family. Each builds its model inside the actor process (heavy
imports happen there), then scores whole batches. ``RewardGroup`` wraps them with Ray."""

from __future__ import annotations

import os

from .config import AlignmentConfig, ArtifactConfig, IdentityConfig
from .types import SceneBatch, Scorer, ScoreResult


class _RewardActor:
    family = ""
    scorer: Scorer  # built by each subclass's __init__, inside the actor process

    def score(self, batch: SceneBatch) -> ScoreResult:
        return self.scorer.score(batch)

    def model(self) -> tuple[str, str]:
        """(name, version) of the model this actor scores with."""
        return self.scorer.name, self.scorer.version

    def pid(self) -> int:
        return os.getpid()


class AlignmentActor(_RewardActor):
    family = "alignment"

    def __init__(self, cfg: AlignmentConfig):
        from .alignment import AlignmentScorer

        self.scorer = AlignmentScorer(model_name=cfg.model_name, checkpoint=cfg.checkpoint, frames_per_scene=cfg.frames_per_scene)


class IdentityActor(_RewardActor):
    family = "identity"

    def __init__(self, cfg: IdentityConfig):
        from .identity import IdentityScorer

        self.scorer = IdentityScorer(recognition=cfg.recognition, detector=cfg.detector, frames_new=cfg.frames_new, frames_history=cfg.frames_history)


class ArtifactActor(_RewardActor):
    family = "artifacts"

    def __init__(self, cfg: ArtifactConfig):
        if cfg.vlm is not None:
            from .vlm_judge import VLMJudge

            self.scorer = VLMJudge(cfg.vlm)
        else:
            from .artifacts import ArtifactScorer

            self.scorer = ArtifactScorer(cfg.calibration)


ACTORS = {cls.family: cls for cls in (AlignmentActor, IdentityActor, ArtifactActor)}
