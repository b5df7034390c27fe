"""Turn rollouts into per-scene rewards with the reward groups (failures masked and counted)."""

from __future__ import annotations

import numpy as np

from inflvg.rollout import Rollout
from inflvg.world.story import Story, subject_history
from reward_actors.combine import combine
from reward_actors.types import SceneBatch


def video_scene_batch(videos: list[np.ndarray], story: Story, frames_per_scene: int) -> SceneBatch:
    """Every scene of videos (T, H, W, 3) of one story, with the frames of its subject's earlier
    scenes as history; video-major order."""
    frames, prompts, history = [], [], []
    for video in videos:
        for s in range(len(story.scenes)):
            frames.append(video[s * frames_per_scene : (s + 1) * frames_per_scene])
            prompts.append(story.prompt(s))
            history.append(subject_history(story, video, frames_per_scene, s))
    return SceneBatch(frames, prompts, history)


def scene_batch(rollouts: list[Rollout], stories: dict[str, Story], frames_per_scene: int) -> SceneBatch:
    """Every scene of every rollout (rollout-major), with its subject's earlier frames as history."""
    parts = [video_scene_batch([r.frames], stories[r.prompt_set_id], frames_per_scene) for r in rollouts]
    return SceneBatch([f for p in parts for f in p.frames], [q for p in parts for q in p.prompts], [h for p in parts for h in p.history])


def score_rollouts(rollouts: list[Rollout], stories: dict[str, Story], frames_per_scene: int, groups: dict,
                   weights: dict[str, float], normalise: bool) -> dict:
    """Fill each rollout's ``scene_rewards`` and ``scores`` in place; return reward statistics."""
    batch = scene_batch(rollouts, stories, frames_per_scene)
    results = {fam: g.score(batch) for fam, g in groups.items()}
    n_scenes = len(batch) // len(rollouts)
    group_ids = np.repeat([r.group_id for r in rollouts], n_scenes) if normalise else None
    reward = combine(results, weights, group_ids)
    raw = combine(results, weights)  # the reward on its own scale, for logging
    for i, r in enumerate(rollouts):
        sl = slice(i * n_scenes, (i + 1) * n_scenes)
        r.scene_rewards = reward.total[sl].astype(np.float32)
        r.scores = {fam: np.where(res.valid[sl], res.scores[sl], np.nan).astype(np.float32) for fam, res in results.items()}
    stats = {"reward_total_mean": float(np.nanmean(raw.total)), "reward_total_std": float(np.nanstd(raw.total))}
    for fam, res in results.items():
        stats[f"reward_{fam}_mean"] = float(np.nanmean(np.where(res.valid, res.scores, np.nan))) if res.valid.any() else float("nan")
        stats[f"reward_{fam}_std"] = float(np.nanstd(np.where(res.valid, res.scores, np.nan))) if res.valid.any() else float("nan")
        stats[f"masked_{fam}"] = int((~res.valid).sum())
    stats["masked_rewards"] = int((~reward.valid).sum())
    return stats
