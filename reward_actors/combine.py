"""The combined reward: a weighted sum of component scores, optionally normalised per group.

A masked component (NaN) drops out of a scene's sum and the remaining weights are renormalised,
so a first appearance (no history, no identity score) is judged on alignment and artifacts; a
scene with every component masked is masked. Nothing is filled in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .types import ScoreResult


@dataclass(frozen=True)
class CombinedReward:
    total: np.ndarray  # (N,) float, NaN where masked
    valid: np.ndarray  # (N,) bool
    components: dict  # family -> (N,) float component scores as used (normalised if asked)
    masked: dict  # family -> number of scenes that family could not score


def normalise_in_groups(x: np.ndarray, groups: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(N,) scores with NaNs, (N,) group ids -> z-scores within each group over valid entries."""
    out = np.full_like(x, np.nan)
    for g in np.unique(groups):
        idx = (groups == g) & ~np.isnan(x)
        if idx.any():
            out[idx] = (x[idx] - x[idx].mean()) / (x[idx].std() + eps)
    return out


def combine(results: dict[str, ScoreResult], weights: dict[str, float], groups: np.ndarray | None = None) -> CombinedReward:
    """results: family -> ScoreResult over the same N scenes; weights: family -> weight >= 0.
    groups: (N,) group ids to normalise each component within its group before summing."""
    unknown = set(weights) - set(results)
    if unknown:
        raise ValueError(f"reward weights name families that were not scored: {sorted(unknown)}")
    comps, masked = {}, {}
    for fam, res in results.items():
        x = np.where(res.valid, res.scores, np.nan).astype(np.float64)
        comps[fam] = normalise_in_groups(x, groups) if groups is not None else x
        masked[fam] = int((~res.valid).sum())
    n = len(next(iter(results.values())).scores) if results else 0
    num = sum((weights[f] * np.nan_to_num(comps[f]) for f in weights), start=np.zeros(n))
    den = sum((weights[f] * ~np.isnan(comps[f]) for f in weights), start=np.zeros(n))  # (N,) even with no weights
    valid = den > 0
    total = np.where(valid, num / np.where(valid, den, 1.0), np.nan)
    return CombinedReward(total, valid, comps, masked)
