"""Artifact reward: 1 when a scene is free of artifacts.

Default: a cheap no-model score from four image statistics (no ground truth used):
spatial high-frequency energy (median |Laplacian|), temporal flicker (median |frame diff|),
the share of pixels far from every flat colour region (local residual), and colour clipping.
A logistic model over their logs turns them into P(clean); its coefficients are fitted by
``python -m reward_actors.fit_artifacts`` on StoryWorld training renders (clean, and the
generator-like imperfections "degrade"/"rough", labelled clean) against deliberately corrupted
renders (noise, blocks, blur + colour shift, salt and pepper), and shipped as JSON.

Optional: a vision-language judge (``vlm_judge.py``) asked the InfLVG yes/no question.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from inflvg.world.vocab import COLOURS

from .types import SceneBatch, ScoreResult

DEFAULT_CALIBRATION = Path(__file__).resolve().parent / "weights" / "artifacts_calibration.json"
FEATURES = ("high_freq", "flicker", "rough_share", "clipped", "blur", "off_palette")
PALETTE = np.array(list(COLOURS.values()), np.float32)  # (6, 3)
OFF_PALETTE_DISTANCE = 70.0


def _laplacian(gray: np.ndarray) -> np.ndarray:
    """(F, H, W) -> (F, H-2, W-2) absolute 4-neighbour Laplacian."""
    c = gray[:, 1:-1, 1:-1]
    return np.abs(4 * c - gray[:, :-2, 1:-1] - gray[:, 2:, 1:-1] - gray[:, 1:-1, :-2] - gray[:, 1:-1, 2:])


def scene_features(frames: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (6,) features, larger = more artifact-like."""
    x = frames.astype(np.float32)
    gray = x.mean(-1)
    lap = _laplacian(gray)
    flicker = np.median(np.abs(np.diff(x, axis=0))) if len(x) > 1 else 0.0
    rough_share = float((lap > 40.0).mean())
    clipped = float(((x <= 2) | (x >= 253)).all(-1).mean())
    grad = np.maximum(np.abs(np.diff(gray, axis=1))[:, :, :-1], np.abs(np.diff(gray, axis=2))[:, :-1, :])
    blur = 100.0 / (np.percentile(grad, 99.5) + 1.0)
    return np.array([np.median(lap), flicker, rough_share, clipped, blur, _off_palette(x)], np.float64)


def _off_palette(x: np.ndarray) -> float:
    """(F, H, W, 3) float -> share of pixels near neither background band nor a character colour."""
    h = x.shape[1]
    bands = np.stack([np.median(x[:, : h // 2], axis=(1, 2)), np.median(x[:, -h // 4 :], axis=(1, 2))], 1)  # (F, 2, 3)
    d_bg = np.linalg.norm(x[:, :, :, None, :] - bands[:, None, None], axis=-1).min(-1)
    d_pal = np.linalg.norm(x[..., None, :] - PALETTE, axis=-1).min(-1)
    return float((np.minimum(d_bg, d_pal) > OFF_PALETTE_DISTANCE).mean())


def _design(feats: np.ndarray) -> np.ndarray:
    """(N, 6) features -> (N, 7) log features with a bias column."""
    scaled = np.maximum(feats, 0) * np.array([1.0, 1.0, 100.0, 100.0, 1.0, 100.0])
    return np.concatenate([np.log1p(scaled), np.ones((len(feats), 1))], 1)


def fit_logistic(feats: np.ndarray, clean: np.ndarray, steps: int = 3000, lr: float = 0.5, l2: float = 1e-3) -> np.ndarray:
    """Fit P(clean) = sigmoid(X w) by projected gradient descent, feature weights <= 0.

    feats (N, 6), clean (N,) bool -> w (7,), the last entry the bias."""
    x, y = _design(feats), clean.astype(np.float64)
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        w -= lr * (x.T @ (p - y) / len(y) + l2 * np.r_[w[:-1], 0.0])
        w[:-1] = np.minimum(w[:-1], 0.0)  # monotone: more of any artifact feature is never cleaner
    return w


class ArtifactScorer:
    """Batched no-model artifact score, calibrated; ``score`` returns P(clean) per scene."""

    def __init__(self, calibration: str | Path | None = None):
        path = Path(calibration) if calibration is not None else DEFAULT_CALIBRATION
        if not path.is_file():
            raise FileNotFoundError(
                f"artifact calibration not found at {str(path)!r}; remake it with `python -m reward_actors.fit_artifacts --out {path}`"
            )
        blob = json.loads(path.read_text())
        self.weights = np.array(blob["weights"], np.float64)
        self.name = "storyworld-artifacts"
        self.version = hashlib.sha256(path.read_bytes()).hexdigest()[:12]

    def probability_clean(self, feats: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-_design(feats) @ self.weights))

    def score(self, batch: SceneBatch) -> ScoreResult:
        feats = np.stack([scene_features(f) for f in batch.frames])
        p = self.probability_clean(feats)
        return ScoreResult(p, np.ones(len(batch), bool), [None] * len(batch), self.name, self.version)
