"""The context-strategy interface: at every scene change, choose up to K long-term tokens.

Every baseline and the learned policy implement ``select``; the generation loop calls it once
per scene with a ``SelectionState``: the prompt sets (free text and optional subject tags), the
pool's candidates with their geometry, and the frames made so far. A strategy that needs ground
truth (``needs_ground_truth``) refuses prompt sets without it in ``check``, before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from ..prompts import PromptSet
    from ..protocol import Pool, PromptQuery


@dataclass
class SelectionState:
    scene: int  # index of the scene about to be generated
    prompt_sets: list  # list[PromptSet], one per video in the batch
    frames_per_scene: int
    budget_k: int
    pool: Pool  # the candidates: features (B, N, d) and geometry (frame, scene, row, col)
    frames: np.ndarray  # (B, t, H, W, 3) uint8, every frame generated so far
    rng: np.random.Generator
    # filled by the generation loop only for a strategy that reads them (``reads_prompt_query``, ``reads_latest``)
    prompt_query: PromptQuery | None = None  # the scene's prompt as a query against the candidates' features
    latest_features: torch.Tensor | None = None  # (B, n, d_feature) the newest frame's features (still in the window)

    @property
    def n_videos(self) -> int:
        return len(self.prompt_sets)

    @property
    def pool_size(self) -> int:
        return self.pool.size

    @property
    def prompts(self) -> list[str]:
        """The current scene's prompt per video."""
        return [ps.scenes[self.scene] for ps in self.prompt_sets]


class ContextStrategy:
    """Base class. ``uses_sink``: keep the first frame; ``full_history``: no budget at all;
    ``needs_ground_truth``: reads StoryWorld's ground truth (the oracle); ``reads_prompt_query``,
    ``reads_latest``: the generation loop fills ``SelectionState.prompt_query`` / ``latest_features``."""

    name: str = ""
    uses_sink: bool = True
    full_history: bool = False
    budgeted: bool = True
    needs_ground_truth: bool = False
    reads_prompt_query: bool = False
    reads_latest: bool = False

    def check(self, prompt_sets: list[PromptSet]) -> None:
        """Raise ValueError, naming the prompt set, if this strategy cannot run on them."""

    def select(self, state: SelectionState) -> np.ndarray:
        """-> (B, K) pool indices, -1 for an unused slot."""
        return np.full((state.n_videos, state.budget_k), -1, np.int64)


def pad_selection(chosen: list[list[int]], k: int) -> np.ndarray:
    out = np.full((len(chosen), k), -1, np.int64)
    for b, idx in enumerate(chosen):
        out[b, : min(k, len(idx))] = idx[:k]
    return out
