"""Whole videos of one prompt set -> per-scene rewards, every reward model loaded once.

Test-time refinement scores its sampled groups through this; in serving it runs as a Serve
deployment that ``cluster.serve`` binds to the generator deployments, so one server holds one
copy of each reward model whatever its requests ask for.

    scorer = VideoScorer(RewardConfig())
    total, parts = scorer.scene_rewards(videos, prompt_set, frames_per_scene)   # (B, S), family -> (B, S)
"""

from __future__ import annotations

import numpy as np

from inflvg.prompts import PromptSet

from .actors import ACTORS
from .combine import combine
from .config import RewardConfig
from .history import video_scene_batch


class VideoScorer:
    """The reward families of a ``RewardConfig`` with a positive weight, in this process."""

    def __init__(self, cfg: RewardConfig | None = None):
        self.cfg = cfg or RewardConfig()
        self.weights = {fam: w for fam, w in self.cfg.weights if w > 0}
        self.scorers = {fam: ACTORS[fam](getattr(self.cfg, fam)).scorer for fam in self.weights}

    def scene_rewards(self, videos: np.ndarray, ps: PromptSet, frames_per_scene: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """videos (B, T, H, W, 3) uint8 of one prompt set -> (combined (B, S), family -> (B, S)), NaN where masked."""
        batch = video_scene_batch(list(videos), ps, frames_per_scene)
        results = {fam: scorer.score(batch) for fam, scorer in self.scorers.items()}
        total = combine(results, self.weights).total.reshape(len(videos), -1)
        parts = {fam: np.where(r.valid, r.scores, np.nan).reshape(len(videos), -1) for fam, r in results.items()}
        return total, parts
