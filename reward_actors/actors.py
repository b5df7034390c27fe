"""One Ray actor class per reward family. Each builds its model inside the actor process (heavy
imports happen there), then scores whole batches. ``RewardGroup`` wraps them with Ray."""

from __future__ import annotations

import os

import numpy as np

from .cache import scene_key
from .config import AlignmentConfig, ArtifactConfig, IdentityConfig
from .device import reward_device
from .types import SceneBatch, Scorer, ScoreResult


def injected_failure(key: str, fraction: float) -> bool:
    """Whether fault injection makes the scorer raise on the scene with cache key ``key``: a
    fixed ``fraction`` of scenes, chosen by their content hash (so a test can count them)."""
    return int(key[:8], 16) < fraction * 16**8


SCORER_ERROR = "scorer raised"  # in the reason of a scene masked because the model raised on it


def is_scorer_error(reason: str | None) -> bool:
    return reason is not None and SCORER_ERROR in reason


class _RewardActor:
    family = ""
    scorer: Scorer  # built by each subclass's __init__, inside the actor process
    fail_fraction = 0.0  # fault injection (``fail_scenes``): the share of scenes the scorer raises on

    def score(self, batch: SceneBatch) -> ScoreResult:
        """Per-scene scores. If the scorer raises, the scenes are scored one by one and only those
        it raises on are masked, with the error as the reason, counted as ``scorer_errors``."""
        try:
            return self._score(batch)
        except Exception:  # noqa: BLE001 - whatever a model raises, the scenes it can score keep their scores
            return _concat([self._score_or_mask(batch, i) for i in range(len(batch))], self.scorer)

    def _score_or_mask(self, batch: SceneBatch, i: int) -> ScoreResult:
        try:
            return self._score(batch.subset([i]))
        except Exception as e:  # noqa: BLE001 - a model's failure on one scene masks that scene, not the batch
            masked = ScoreResult.masked(1, f"the {self.family} {SCORER_ERROR} {type(e).__name__}: {e}", self.scorer.name, self.scorer.version)
            masked.counts["scorer_errors"] = 1
            return masked

    def _score(self, batch: SceneBatch) -> ScoreResult:
        failing = [i for i in range(len(batch)) if self.fail_fraction and injected_failure(scene_key(batch, i), self.fail_fraction)]
        if failing:
            raise RuntimeError(f"injected fault on scene {failing[0]} (fail_scenes)")
        return self.scorer.score(batch)

    def fail_scenes(self, fraction: float) -> None:
        """Fault injection: from now on the scorer raises on ``fraction`` of scenes (by content hash)."""
        self.fail_fraction = float(fraction)

    def model(self) -> tuple[str, str]:
        """(name, version) of the model this actor scores with."""
        return self.scorer.name, self.scorer.version

    def pid(self) -> int:
        return os.getpid()


class AlignmentActor(_RewardActor):
    family = "alignment"

    def __init__(self, cfg: AlignmentConfig):
        from .alignment import AlignmentScorer

        device = reward_device(cfg.num_gpus, "AlignmentConfig.num_gpus")  # cuda when the replica reserved a GPU
        self.scorer = AlignmentScorer(model_name=cfg.model_name, checkpoint=cfg.checkpoint, frames_per_scene=cfg.frames_per_scene, device=device)


class IdentityActor(_RewardActor):
    family = "identity"

    def __init__(self, cfg: IdentityConfig):
        from .identity import IdentityScorer

        device = reward_device(cfg.num_gpus, "IdentityConfig.num_gpus")  # cuda when the replica reserved a GPU
        self.scorer = IdentityScorer(recognition=cfg.recognition, detector=cfg.detector, frames_new=cfg.frames_new,
                                     frames_history=cfg.frames_history, device=device)  # fmt: skip


class ArtifactActor(_RewardActor):
    family = "artifacts"

    def __init__(self, cfg: ArtifactConfig):
        device = reward_device(cfg.num_gpus, "ArtifactConfig.num_gpus")  # cuda when the replica reserved a GPU
        if cfg.vlm is not None:
            from .vlm_judge import VLMJudge

            self.scorer = VLMJudge(cfg.vlm, device=device)
        else:
            if device != "cpu":
                raise ValueError(
                    f"ArtifactConfig.num_gpus={cfg.num_gpus} reserves a GPU the no-model artifact score (numpy image "
                    "statistics) never uses; set ArtifactConfig.num_gpus=0, or give ArtifactConfig.vlm a local judge to run on it"
                )
            from .artifacts import ArtifactScorer

            self.scorer = ArtifactScorer(cfg.calibration)


def _concat(parts: list[ScoreResult], scorer: Scorer) -> ScoreResult:
    counts: dict = {}
    for p in parts:
        for k, v in p.counts.items():
            counts[k] = counts.get(k, 0) + v
    scores = np.concatenate([p.scores for p in parts]) if parts else np.zeros(0)
    valid = np.concatenate([p.valid for p in parts]) if parts else np.zeros(0, bool)
    return ScoreResult(scores, valid, [r for p in parts for r in p.reasons], scorer.name, scorer.version, counts)


ACTORS = {cls.family: cls for cls in (AlignmentActor, IdentityActor, ArtifactActor)}
