"""Typed, frozen configuration of the core: the world, the generator and its context budget.

Every field is validated in ``__post_init__``; a bad value raises ``ValueError`` naming the
field and saying how to fix it. Nothing is silently changed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from .validate import one_of, positive_int


@dataclass(frozen=True)
class WorldConfig:
    frame_size: int = 32
    """Side of a square RGB frame in pixels; a multiple of the generator's long-term patch."""
    frames_per_scene: int = 4
    """Frames generated for each scene prompt."""
    n_scenes: int = 8
    """Scenes per video at the generator's training horizon (1x)."""
    cast_size: int = 4
    """Characters per video; each is named explicitly once, then only by letter."""

    def __post_init__(self) -> None:
        for f in fields(self):
            positive_int(self, f.name)
        if self.cast_size > 8:
            raise ValueError(f"WorldConfig.cast_size must be <= 8 (letters A-H), got {self.cast_size}")
        if self.frame_size % 8:
            raise ValueError(f"WorldConfig.frame_size must be a multiple of 8, got {self.frame_size}")


@dataclass(frozen=True)
class ContextConfig:
    """The fixed budget: sink + K selected + W window + current frame."""

    budget_k: int = 16
    """Long-term (compressed) tokens kept at each scene change."""
    window_frames: int = 2
    """Most recent frames kept at full resolution."""
    sink_frames: int = 1
    """First frames kept forever (the attention sink)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            positive_int(self, f.name)


@dataclass(frozen=True)
class GeneratorConfig:
    patch: int = 4
    """Pixels per side of a full-resolution token."""
    merge: int = 2
    """Patches per side merged into one long-term token (FAR-style compression)."""
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    mlp_ratio: int = 4
    d_text: int = 64
    """Width of the text encoder (a small BERT from transformers)."""
    text_layers: int = 2
    max_prompt_tokens: int = 24
    denoise_steps: int = 4
    """Euler steps of the flow-matching sampler per frame."""
    horizon_frames: int = 32
    """Frames the generator is trained on; temporal positions beyond it are extrapolated."""
    rope_scaling: Literal["none", "flex"] = "flex"
    """How temporal RoPE treats distances beyond the horizon: 'flex' interpolates only the
    low-frequency components (frequency-aware scaling), 'none' extrapolates all of them."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "rope_scaling":
                positive_int(self, f.name)
        if self.d_model % self.n_heads:
            raise ValueError(
                f"GeneratorConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if (self.d_model // self.n_heads) % 8:
            raise ValueError("GeneratorConfig: head width d_model/n_heads must be a multiple of 8 for RoPE")
        one_of(self, "rope_scaling", ("none", "flex"))
