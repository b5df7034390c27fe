"""Turn rollouts into per-scene rewards with the reward groups (failures masked and counted)."""

from __future__ import annotations

import numpy as np

from inflvg.prompts import PromptSet
from inflvg.rollout import Rollout
from reward_actors.combine import combine
from reward_actors.history import frames_read, video_scene_batch
from reward_actors.types import SceneBatch


def _frames(r: Rollout) -> np.ndarray:
    if r.frames is None:
        raise ValueError(f"rollout {r.rollout_index} of group {r.group_id} ({r.prompt_set_id}) carries no frames to score")
    return r.frames


def _history(r: Rollout, rollouts: list[Rollout]) -> np.ndarray | None:
    """The video whose earlier scenes are ``r``'s history: a tree rollout's kept branch, else None (its own)."""
    if r.history_from < 0:
        return None
    kept = [o for o in rollouts if o.group_id == r.group_id and o.rollout_index == r.history_from]
    if len(kept) != 1:
        raise ValueError(f"tree rollout {r.rollout_index} of group {r.group_id} ({r.prompt_set_id}) branches from rollout "
                         f"{r.history_from}, which is not among the rollouts scored with it: score a group whole")  # fmt: skip
    return _frames(kept[0])


def scene_batch(rollouts: list[Rollout], prompt_sets: dict[str, PromptSet], step: list[Rollout] | None = None) -> SceneBatch:
    """Every scene of every rollout (rollout-major), with its subject's earlier frames as history
    (for a tree rollout, those of the branch its history continued with, found in ``step``: the
    step's rollouts, by default ``rollouts`` themselves)."""
    parts = [video_scene_batch([_frames(r)], prompt_sets[r.prompt_set_id], len(_frames(r)) // len(r.prompts), _history(r, step or rollouts))
             for r in rollouts]  # fmt: skip
    return SceneBatch([f for p in parts for f in p.frames], [q for p in parts for q in p.prompts],
                      [h for p in parts for h in (p.history or [None] * len(p.frames))])  # fmt: skip


def score_rollouts(rollouts: list[Rollout], prompt_sets: dict[str, PromptSet], groups: dict, weights: dict[str, float],
                   normalise: bool) -> dict:  # fmt: skip
    """Fill each rollout's ``scene_rewards`` and ``scores`` in place; return reward statistics.
    Rollouts may differ in scene count (a prompt file that mixes them)."""
    batch = scene_batch(rollouts, prompt_sets)
    results = {fam: g.score(frames_read(fam, g.cfg, batch)) for fam, g in groups.items()}  # each family gets what it reads
    counts = [len(r.scene_rewards) for r in rollouts]
    group_ids = np.repeat([r.group_id for r in rollouts], counts) if normalise else None
    reward = combine(results, weights, group_ids)
    raw = combine(results, weights)  # the reward on its own scale, for logging
    edges = np.cumsum([0, *counts])
    for i, r in enumerate(rollouts):
        sl = slice(edges[i], edges[i + 1])
        r.scene_rewards = reward.total[sl].astype(np.float32)
        r.scores = {fam: np.where(res.valid[sl], res.scores[sl], np.nan).astype(np.float32) for fam, res in results.items()}
    stats = {"reward_total_mean": float(np.nanmean(raw.total)), "reward_total_std": float(np.nanstd(raw.total))}
    for fam, res in results.items():
        valid = np.where(res.valid, res.scores, np.nan)
        stats[f"reward_{fam}_mean"] = float(np.nanmean(valid)) if res.valid.any() else float("nan")
        stats[f"reward_{fam}_std"] = float(np.nanstd(valid)) if res.valid.any() else float("nan")
        stats[f"masked_{fam}"] = int((~res.valid).sum())
        stats[f"scorer_errors_{fam}"] = int(res.counts.get("scorer_errors", 0))  # of those, scenes its model raised on
    stats["masked_rewards"] = int((~reward.valid).sum())
    return stats
