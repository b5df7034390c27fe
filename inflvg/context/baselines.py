"""Baseline strategies (DESIGN.md section 5): full history, sliding window, sink + window,
FAR-uniform, random-K, and oracle-K from StoryWorld ground truth (an upper bound)."""

from __future__ import annotations

import numpy as np

from ..world.render import background
from .base import ContextStrategy, SelectionState, pad_selection

ORACLE_MIN_PIXELS = 8  # a long-term token shows the subject when this many of its pixels differ from the background
ORACLE_PIXEL_DIFF = 60  # summed |rgb| difference from the background template that marks a subject pixel


class FullHistory(ContextStrategy):
    """Every past frame at full resolution: no budget, cost grows with the video."""

    name, full_history, budgeted = "full", True, False


class SlidingWindow(ContextStrategy):
    """Only the last W frames."""

    name, uses_sink = "window", False

    def select(self, state: SelectionState) -> np.ndarray:
        return np.zeros((state.n_videos, 0), np.int64)


class SinkWindow(ContextStrategy):
    """First frame + last W frames (StreamingLLM's attention sink; FLEX's inference-only sink)."""

    name = "sink_window"

    def select(self, state: SelectionState) -> np.ndarray:
        return np.zeros((state.n_videos, 0), np.int64)


class FarUniform(ContextStrategy):
    """FAR-style long-term memory: every compressed token up to the budget, newest first."""

    name = "far"

    def select(self, state: SelectionState) -> np.ndarray:
        newest = np.argsort(-state.pool_frames, kind="stable")[: state.budget_k].tolist()
        return pad_selection([newest] * state.n_videos, state.budget_k)


class RandomK(ContextStrategy):
    """K pool tokens uniformly at random, without replacement."""

    name = "random"

    def select(self, state: SelectionState) -> np.ndarray:
        k = min(state.budget_k, state.pool_size)
        return pad_selection([state.rng.choice(state.pool_size, k, replace=False).tolist() for _ in state.stories], state.budget_k)


class OracleK(ContextStrategy):
    """The referenced character's tokens, newest first, from ground truth: which frames show it
    (the story) and which of their tokens cover it (difference from the known background)."""

    name = "oracle"

    def select(self, state: SelectionState) -> np.ndarray:
        chosen = [self._subject_tokens(state, b) for b in range(state.n_videos)]
        return pad_selection(chosen, state.budget_k)

    def _subject_tokens(self, state: SelectionState, b: int) -> list[int]:
        story, fps = state.stories[b], state.frames_per_scene
        subject = story.scenes[state.scene].character
        scene_of = state.pool_frames // fps
        size = state.frames.shape[2]
        g = int(round(np.sqrt(state.pool_tokens.max() + 1))) if state.pool_size else 1
        side = size // g
        picks = []
        for i in np.argsort(-state.pool_frames, kind="stable"):
            sc = story.scenes[scene_of[i]]
            if sc.character != subject:
                continue
            r, c = divmod(int(state.pool_tokens[i]), g)
            patch = state.frames[b, state.pool_frames[i], r * side : (r + 1) * side, c * side : (c + 1) * side]
            bg = background(sc.background, size)[r * side : (r + 1) * side, c * side : (c + 1) * side]
            diff = np.abs(patch.astype(np.int16) - bg.astype(np.int16)).sum(-1)
            if (diff > ORACLE_PIXEL_DIFF).sum() >= ORACLE_MIN_PIXELS:
                picks.append(int(i))
        return picks


STRATEGIES = {cls.name: cls for cls in (FullHistory, SlidingWindow, SinkWindow, FarUniform, RandomK, OracleK)}


def make_strategy(name: str) -> ContextStrategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]()
