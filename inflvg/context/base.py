"""The context-strategy interface: at every scene change, choose up to K long-term tokens.

Every baseline and the learned policy implement ``select``; the generator's sampler calls it
once per scene with a ``SelectionState`` and gathers the chosen tokens from the pool.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass
class SelectionState:
    scene: int  # index of the scene about to be generated
    stories: list  # list[world.Story], one per video in the batch
    frames_per_scene: int
    budget_k: int
    pool_frames: np.ndarray  # (N,) frame index of each pool token
    pool_tokens: np.ndarray  # (N,) token index within its frame
    features: "torch.Tensor"  # (B, N, d) encoder features of the pool tokens
    frames: np.ndarray  # (B, t, H, W, 3) uint8, every frame generated so far
    prompts: list  # list[str], the current scene's prompt per video
    rng: np.random.Generator

    @property
    def n_videos(self) -> int:
        return len(self.stories)

    @property
    def pool_size(self) -> int:
        return len(self.pool_frames)


class ContextStrategy:
    """Base class. ``uses_sink``: keep the first frame; ``full_history``: no budget at all."""

    name: str = ""
    uses_sink: bool = True
    full_history: bool = False
    budgeted: bool = True

    def select(self, state: SelectionState) -> np.ndarray:
        """-> (B, K) pool indices, -1 for an unused slot."""
        return np.full((state.n_videos, state.budget_k), -1, np.int64)


def pad_selection(chosen: list[list[int]], k: int) -> np.ndarray:
    out = np.full((len(chosen), k), -1, np.int64)
    for b, idx in enumerate(chosen):
        out[b, : min(k, len(idx))] = idx[:k]
    return out

