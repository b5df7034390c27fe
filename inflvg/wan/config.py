"""Typed, frozen configuration of the Wan-architecture block-causal backend and its presets.

``wan-1.3b`` has the dimensions of Wan2.1-T2V-1.3B as Self-Forcing, CausVid and LongLive use it
(30 layers of width 1536, 12 heads, 16-channel VAE latents, a 30 x 52 token grid at 480 x 832,
blocks of 3 latent frames, 4 denoising steps, a horizon of 7 blocks); ``wan-tiny`` is the same
architecture at a width a CPU test runs in seconds, with a non-square grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from ..config import ContextConfig
from ..validate import positive_int


@dataclass(frozen=True)
class WanConfig:
    name: str
    """The preset's name (the registry name of the backend)."""
    dim: int = 1536
    """Transformer width (num_heads x head_dim)."""
    ffn_dim: int = 8960
    """Hidden width of each block's feed-forward network."""
    num_heads: int = 12
    """Attention heads per layer."""
    num_layers: int = 30
    """Transformer blocks."""
    text_dim: int = 4096
    """Width of the text encoder's output (umT5-XXL: 4096)."""
    freq_dim: int = 256
    """Width of the sinusoidal timestep embedding."""
    latent_channels: int = 16
    latent_shape: tuple[int, int] = (60, 104)
    """(h, w) of a latent frame; patchify 1x2x2 makes the token grid (h/2, w/2)."""
    frames_per_block: int = 3
    """Latent frames denoised together (Self-Forcing's block)."""
    blocks_per_scene: int = 1
    """Blocks made per scene (one prompt); a scene change comes every this many blocks."""
    horizon_blocks: int = 7
    """Blocks the model was trained on (Self-Forcing: 21 latent frames)."""
    denoising_timesteps: tuple[int, ...] = (1000, 750, 500, 250)
    """Timesteps of the few-step sampler, before the shift."""
    timestep_shift: float = 5.0
    """Flow-matching shift: sigma' = shift * sigma / (1 + (shift - 1) * sigma)."""
    feature_layer: int = 19
    """Layer whose keys are the policy's candidate features (InfLVG reads layer 19 of 30)."""
    max_prompt_tokens: int = 512
    """Text tokens per prompt after padding or truncation (umT5 in Wan: 512)."""
    context: ContextConfig = field(default_factory=lambda: ContextConfig(budget_k=9360, window_frames=3, sink_frames=3))
    """Sink block, window of one block, K (InfLVG: 9,360 tokens = 6 frames of 1,560)."""
    rope_max_frames: int = 1024
    """Largest frame index RoPE tables cover (16x the horizon is 336)."""
    vae_base_dim: int = 96
    """Width of the VAE (AutoencoderKLWan's base_dim; 96 for Wan2.1)."""
    pool_on_host: bool = False
    """Keep the long-term pool in (pinned) host memory; only the K selected tokens go to the device."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.type == "int":
                positive_int(self, f.name)
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"WanConfig.dim ({self.dim}) must be num_heads ({self.num_heads}) x an even head width (RoPE pairs)")
        if any(s % 2 for s in self.latent_shape):
            raise ValueError(f"WanConfig.latent_shape must be even on both axes (patchify 1x2x2), got {self.latent_shape}")
        if not 0 <= self.feature_layer < self.num_layers:
            raise ValueError(f"WanConfig.feature_layer must be in 0..{self.num_layers - 1}, got {self.feature_layer}")
        for name in ("sink_frames", "window_frames"):
            if getattr(self.context, name) % self.frames_per_block:
                raise ValueError(f"WanConfig.context.{name} must be a multiple of frames_per_block ({self.frames_per_block})")

    @property
    def grid(self) -> tuple[int, int]:
        return self.latent_shape[0] // 2, self.latent_shape[1] // 2

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def frames_per_scene(self) -> int:
        return self.frames_per_block * self.blocks_per_scene

    @property
    def horizon_frames(self) -> int:
        return self.frames_per_block * self.horizon_blocks


PRESETS = {
    "wan-1.3b": WanConfig(name="wan-1.3b"),
    "wan-tiny": WanConfig(
        name="wan-tiny", dim=48, ffn_dim=96, num_heads=2, num_layers=3, text_dim=32, freq_dim=32, latent_shape=(8, 12),
        feature_layer=1, max_prompt_tokens=32, vae_base_dim=8,
        context=ContextConfig(budget_k=24, window_frames=3, sink_frames=3),
    ),
}  # fmt: skip


def preset(name: str, **changes) -> WanConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown Wan preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **changes)
