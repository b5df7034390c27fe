"""The tiny StoryWorld model behind the generator protocol (``inflvg.protocol.Generator``).

A block is one frame: its tokens are denoised together with a few Euler steps of the flow,
then the clean frame is encoded twice into the cache (full resolution for the sink and the
window, FAR-compressed for the long-term pool). Latents are pixels in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import ContextConfig, GeneratorConfig, WorldConfig
from ..protocol import GeneratorSpec, PromptEmbedding, PromptQuery
from .cache import KVCache
from .model import Block, Generator, Text
from .tokens import to_uint8
from .weights import load_generator, read_configs


class StoryWorldGenerator:
    """``inflvg.protocol.Generator`` over a ``Generator`` model and the configs it was trained with."""

    def __init__(self, model: Generator, world: WorldConfig, ctx: ContextConfig):
        self.model, self.world = model, world
        cfg = model.cfg
        g = round(model.long_tokens_per_frame**0.5)
        self.spec = GeneratorSpec(
            backend="storyworld", frame_shape=(model.frame_size, model.frame_size), frames_per_block=1,
            frames_per_scene=world.frames_per_scene, horizon_frames=cfg.horizon_frames, grid=(g, g),
            tokens_per_frame=model.tokens_per_frame,
            d_feature=cfg.d_model, d_prompt=cfg.d_model, kv_bytes_per_token=cfg.n_layers * 2 * cfg.d_model * 4,
            parameters=sum(p.numel() for p in model.parameters()), context=ctx,
        )  # fmt: skip
        self.tokenizer = model.text.tokenizer

    @property
    def device(self) -> torch.device:
        return self.model.full_yx.device

    def encode_prompts(self, prompts: list[str]) -> PromptEmbedding:
        text = self.model.encode_text(list(prompts))
        return PromptEmbedding(text.tokens, text.mask, self.tokenizer.word_ids(list(prompts)).to(text.tokens.device))

    @torch.no_grad()
    def prompt_query(self, prompts: PromptEmbedding) -> PromptQuery:
        """The candidates' features are the last block's output, which no attention of the model reads;
        the nearest attention is that block's cross-attention, where visual tokens query the prompt.
        Its logit between a candidate h and prompt token j, cross_q(norm_x(h)) . k_j / sqrt(head_dim),
        averaged over the prompt's real tokens, is linear in the standardised h: folded into a query."""
        blk = self.model.blocks[-1]
        assert isinstance(blk, Block)
        keys = blk.cross_kv(prompts.tokens).chunk(2, -1)[0]  # (B, L, d) the prompt's cross-attention keys
        mask = prompts.mask.to(keys.dtype)[..., None]
        k = (keys * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, d): the mean key
        scale = self.model.head_dim**-0.5
        v = k @ blk.cross_q.weight  # (B, d): q . k = norm_x(h) . v + bias . k
        offset = (v * blk.norm_x.bias).sum(-1) + (k * blk.cross_q.bias).sum(-1)
        return PromptQuery(v * blk.norm_x.weight * scale, offset * scale, standardize=True, eps=blk.norm_x.eps)

    def new_cache(self, n_videos: int, n_frames: int, frames_per_scene: int, ctx: ContextConfig, full_history: bool,
                  uses_sink: bool) -> KVCache:  # fmt: skip
        return KVCache(self.model, n_videos, n_frames, ctx, full_history, frames_per_scene, uses_sink)

    def next_block(self, cache: KVCache, prompts: PromptEmbedding, noise: torch.Generator, shared_noise: bool) -> torch.Tensor:
        """One frame of every video -> (B, 1, H, W, 3) pixels in [-1, 1], now in the cache."""
        model, b, t, size = self.model, cache.n_videos, cache.next_frame, self.model.frame_size
        text = Text(prompts.tokens, prompts.mask, prompts.tokens[:, 0])
        context = cache.context(t, cache.selected, cache.uses_sink, b)
        cache.context_tokens = 0 if context is None else context.n_tokens
        x = torch.randn(1 if shared_noise else b, size, size, 3, generator=noise).expand(b, -1, -1, -1).to(self.device)
        tt = torch.full((b,), t, device=self.device)
        steps = model.cfg.denoise_steps
        for k in range(steps):
            s = torch.full((b,), k / steps, device=self.device)
            x = x + model.velocity(x, s, tt, text, context, cache.t_freqs) / steps
        x = x.clamp(-1, 1)
        kv_full, _ = model.encode_frames(x, tt, text, long=False, t_freqs=cache.t_freqs)
        kv_long, feats = model.encode_frames(x, tt, text, long=True, t_freqs=cache.t_freqs)
        cache.add(t, kv_full, kv_long, feats)
        cache.next_frame = t + 1
        return x[:, None]

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        return to_uint8(latents)


def load(name: str = "storyworld", weights: str | None = None, device: str = "cpu") -> StoryWorldGenerator:
    """The registry's loader (``inflvg.protocol.load_backend('storyworld', weights, device)``)."""
    model, world, ctx, _ = load_generator(weights, device)
    return StoryWorldGenerator(model, world, ctx)


def widths(name: str = "storyworld", weights: str | None = None) -> tuple[int, int]:
    """(d_feature, d_prompt) of the weights, without building the model."""
    d = GeneratorConfig(**read_configs(weights)["generator_config"]).d_model
    return d, d
