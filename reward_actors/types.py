"""What crosses the reward actors' boundary: a batch of scenes in, per-scene scores out.

Scores are never made up: a scene a model cannot score is masked (``valid`` False, score NaN)
with a reason, and counted by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


def check_frames(frames: object, what: str) -> np.ndarray:
    """Validate one scene's frames: a (F, H, W, 3) uint8 array with F >= 1."""
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"{what}: expected a numpy array of frames, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        nan = " and contains NaN" if np.issubdtype(frames.dtype, np.floating) and np.isnan(frames).any() else ""
        raise ValueError(
            f"{what}: frames must be uint8 RGB in 0..255, got dtype {frames.dtype}{nan}; convert with (x * 255).round().astype(np.uint8)"
        )
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{what}: frames must have shape (F, H, W, 3), got {frames.shape}")
    if frames.shape[0] == 0:
        raise ValueError(f"{what}: the scene has no frames")
    return frames


@dataclass(frozen=True)
class SceneBatch:
    """N scenes to score. ``history[i]`` holds earlier frames of scene i's subject (or None)."""

    frames: list  # N arrays (F_i, H, W, 3) uint8
    prompts: list  # N prompt strings
    history: list | None = None  # N arrays (M_i, H, W, 3) uint8, or None entries

    def __post_init__(self) -> None:
        if len(self.frames) != len(self.prompts):
            raise ValueError(f"SceneBatch: {len(self.frames)} scenes but {len(self.prompts)} prompts")
        for i, f in enumerate(self.frames):
            check_frames(f, f"scene {i}")
        for i, p in enumerate(self.prompts):
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"scene {i}: prompt must be a non-empty string, got {p!r}")
        if self.history is not None:
            if len(self.history) != len(self.frames):
                raise ValueError(f"SceneBatch: {len(self.frames)} scenes but {len(self.history)} history entries")
            for i, h in enumerate(self.history):
                if h is not None:
                    check_frames(h, f"history of scene {i}")

    def __len__(self) -> int:
        return len(self.frames)

    def subset(self, idx: list[int]) -> SceneBatch:
        hist = None if self.history is None else [self.history[i] for i in idx]
        return SceneBatch([self.frames[i] for i in idx], [self.prompts[i] for i in idx], hist)


@dataclass
class ScoreResult:
    """Per-scene scores of one reward family; masked scenes have NaN and a reason."""

    scores: np.ndarray  # (N,) float64 in [0, 1], NaN where masked
    valid: np.ndarray  # (N,) bool
    reasons: list  # N entries: None, or why the scene was masked
    model: str  # name of the model that produced the scores
    version: str  # content hash of its weights/config
    counts: dict = field(default_factory=dict)  # e.g. frames dropped for lack of a subject

    @staticmethod
    def masked(n: int, reason: str, model: str, version: str) -> ScoreResult:
        return ScoreResult(np.full(n, np.nan), np.zeros(n, bool), [reason] * n, model, version)

    def __post_init__(self) -> None:
        n = len(self.scores)
        if len(self.valid) != n or len(self.reasons) != n:
            raise ValueError("ScoreResult: scores, valid and reasons must have one entry per scene")


class Scorer(Protocol):
    """What a reward actor holds: a model that scores whole batches, named and versioned."""

    name: str  # name of the model, reported in every ScoreResult
    version: str  # content hash of its weights/config

    def score(self, batch: SceneBatch) -> ScoreResult: ...
