"""Scenes to score, with the history the identity reward compares each against, found from the
prompts alone: the earlier scenes about the subject the scene's prompt names (its tag, or its
subject words, ``inflvg.subjects``). Never from ground truth, and never "whichever earlier scene
looks closest", which would reward bringing back the wrong character as long as it came back.
"""

from __future__ import annotations

import numpy as np

from inflvg.prompts import PromptSet
from inflvg.subjects import subject_keys, subject_scenes

from .types import SceneBatch


def named_history(video: np.ndarray, ps: PromptSet, frames_per_scene: int, scene: int, keys: list | None = None) -> np.ndarray | None:
    """video (T, H, W, 3) -> the frames (M, H, W, 3) of the earlier scenes about ``scene``'s subject, or None."""
    earlier = subject_scenes(ps, scene, keys)
    if not earlier:
        return None
    return np.concatenate([video[i * frames_per_scene : (i + 1) * frames_per_scene] for i in earlier])


def video_scene_batch(videos: list[np.ndarray], ps: PromptSet, frames_per_scene: int, history_video: np.ndarray | None = None) -> SceneBatch:
    """Every scene of videos (T, H, W, 3) of one prompt set, each with its subject's earlier
    frames as history; video-major order. ``history_video``: the video whose earlier scenes are
    every scene's history (a tree rollout's kept branch); None: each video's own."""
    keys = subject_keys(ps)
    frames, prompts, history = [], [], []
    for video in videos:
        for s, prompt in enumerate(ps.scenes):
            frames.append(video[s * frames_per_scene : (s + 1) * frames_per_scene])
            prompts.append(prompt)
            history.append(named_history(video if history_video is None else history_video, ps, frames_per_scene, s, keys))
    return SceneBatch(frames, prompts, history)


def frames_read(family: str, cfg, batch: SceneBatch) -> SceneBatch:
    """The frames of ``batch`` that ``family``'s scorer reads, and no others, so that only they travel:
    alignment ``cfg.frames_per_scene`` evenly spaced frames of each scene, identity ``cfg.frames_new`` of
    each scene and ``cfg.frames_history`` of its history (InfLVG: 8 + 8), artifacts every frame (its
    score is a mean over all of them); only identity reads the history. The scores do not change:
    each scorer spaces its picks the same way over what it gets, and k evenly spaced frames of k
    frames are all of them."""
    from .identity import sample_frames

    if family == "identity":
        history = None if batch.history is None else [None if h is None else sample_frames(h, cfg.frames_history) for h in batch.history]
        return SceneBatch([sample_frames(f, cfg.frames_new) for f in batch.frames], batch.prompts, history)
    if family == "alignment":
        return SceneBatch([sample_frames(f, cfg.frames_per_scene) for f in batch.frames], batch.prompts)
    return SceneBatch(batch.frames, batch.prompts)
