"""A Wan-architecture block-causal generator behind the protocol (``inflvg.protocol.Generator``).

A block (3 latent frames) is denoised together in a few steps of the flow (Self-Forcing's
sampler: predict the clean block, re-noise it to the next, smaller noise level with fresh noise),
attending to the cache's context and to itself; then the block is run once more at timestep 0
to write its clean keys and values into the cache, as Self-Forcing does. Latent frames decode
one by one through the Wan VAE (each as a one-frame clip), so frame t of a video is latent
frame t.

    gen = load_backend("wan-tiny")                      # random weights, CPU tests
    gen = load_backend("wan-1.3b", weights="FOLDER")    # a Self-Forcing-style checkpoint + vae/, text_encoder/, tokenizer/
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..config import ContextConfig
from ..protocol import GeneratorSpec, PromptEmbedding, PromptQuery
from .cache import WanCache
from .config import WanConfig, preset
from .model import CausalWan
from .text import WanText, load_local, tiny_encoder, tiny_tokenizer
from .weights import find_checkpoint, load_transformer, load_vae, offline

FP32_MODULES = ("rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3")  # kept in fp32 under bf16


class WanGenerator:
    """``inflvg.protocol.Generator`` over a block-causal Wan transformer, a umT5 encoder and the Wan VAE."""

    def __init__(self, cfg: WanConfig, model: CausalWan, text: WanText, vae, device: str = "cpu"):
        self.cfg, self.model, self.text, self.vae = cfg, model.eval().requires_grad_(False), text, vae.eval().requires_grad_(False)
        self.device = torch.device(device)
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.tokenizer = text
        self._to_device()
        spatial = 2 ** (len(vae.config.dim_mult) - 1)
        self.spec = GeneratorSpec(
            backend=cfg.name, frame_shape=(cfg.latent_shape[0] * spatial, cfg.latent_shape[1] * spatial),
            frames_per_block=cfg.frames_per_block, frames_per_scene=cfg.frames_per_scene, horizon_frames=cfg.horizon_frames,
            grid=cfg.grid, tokens_per_frame=cfg.tokens_per_frame, d_feature=cfg.dim, d_prompt=cfg.dim,
            kv_bytes_per_token=cfg.num_layers * 2 * cfg.dim * torch.finfo(self.dtype).bits // 8,
            parameters=sum(p.numel() for p in model.net.parameters()), context=cfg.context,
        )  # fmt: skip
        self.sigmas = self._sigmas()

    def _to_device(self) -> None:
        # the RoPE tables, kept before the cast: a cast to bf16 and back would round them (error ~2e-3)
        rope = cast(torch.nn.Module, self.model.net.rope)
        tables = {name: t.clone() for name, t in rope.named_buffers()}
        # torch's own Module.to: diffusers' warns about casting, and the fp32 modules are restored below
        net = torch.nn.Module.to(self.model.net, self.device, self.dtype)
        for name, module in net.named_modules():
            if name.split(".")[-1] in FP32_MODULES:
                module.float()
        for name, t in tables.items():
            rope.register_buffer(name, t.float().to(self.device), persistent=False)
        for name, p in net.named_parameters():
            if name.endswith("scale_shift_table"):
                p.data = p.data.float()
        self.text.encoder.to(self.device)
        self.vae.to(self.device)

    def _sigmas(self) -> list[float]:
        """Noise levels of the few-step sampler: the timesteps as fractions, shifted as in flow matching."""
        s = [t / 1000.0 for t in self.cfg.denoising_timesteps]
        k = self.cfg.timestep_shift
        return [k * x / (1 + (k - 1) * x) for x in s]

    def encode_prompts(self, prompts: list[str]) -> PromptEmbedding:
        states, mask = self.text.encode(list(prompts))
        tokens = self.model.embed_text(states.to(self.dtype)).float()
        return PromptEmbedding(tokens, mask, self.text.word_ids(list(prompts)).to(self.device))

    @torch.no_grad()
    def prompt_query(self, prompts: PromptEmbedding) -> PromptQuery:
        """The candidates' features are the keys of layer ``feature_layer``'s self-attention (after norm_k,
        before RoPE); the prompt's tokens pass through that layer's query projection (and norm_q) and are
        averaged over the real tokens: the logit each cached key would get from the prompt as a query
        there, without positions (the prompt has none)."""
        block: Any = self.model.net.blocks[self.cfg.feature_layer]  # diffusers' WanTransformerBlock
        attn = block.attn1
        q = attn.norm_q(attn.to_q(prompts.tokens.to(self.device, self.dtype))).float()  # (B, L, dim)
        mask = prompts.mask.to(q.device, q.dtype)[..., None]
        q = (q * mask).sum(1) / mask.sum(1).clamp(min=1)
        return PromptQuery(q * (self.cfg.dim // self.cfg.num_heads) ** -0.5, torch.zeros(len(q), device=q.device), standardize=False)

    def new_cache(self, n_videos: int, n_frames: int, frames_per_scene: int, ctx: ContextConfig, full_history: bool,
                  uses_sink: bool) -> WanCache:  # fmt: skip
        return WanCache(self.model, n_videos, n_frames, frames_per_scene, ctx, full_history, uses_sink, self.dtype, self.cfg.pool_on_host)

    @torch.no_grad()
    def next_block(self, cache: WanCache, prompts: PromptEmbedding, noise: torch.Generator, shared_noise: bool) -> torch.Tensor:
        """The next block of every video -> its clean latents (B, F, C, h, w), now in the cache."""
        b, f, first = cache.n_videos, self.cfg.frames_per_block, cache.next_frame
        shape = (1 if shared_noise else b, f, self.cfg.latent_channels, *self.cfg.latent_shape)
        draw = lambda: torch.randn(shape, generator=noise).expand(b, -1, -1, -1, -1).to(self.device, self.dtype)  # noqa: E731
        text, ctx = prompts.tokens.to(self.dtype), cache.context()
        cache.context_tokens = 0 if ctx is None else ctx.n_tokens
        x = draw()
        for i, sigma in enumerate(self.sigmas):
            flow, _ = self.model.forward_block(x, torch.full((b,), sigma * 1000.0, device=self.device), first, text, ctx)
            clean = x.float() - sigma * flow
            x = (clean if i + 1 == len(self.sigmas) else (1 - self.sigmas[i + 1]) * clean + self.sigmas[i + 1] * draw().float()).to(self.dtype)
        _, kv = self.model.forward_block(x, torch.zeros(b, device=self.device), first, text, ctx)  # the clean block's keys/values
        cache.add(first, kv)
        cache.next_frame = first + f
        return x

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """(B, F, C, h, w) -> (B, F, H, W, 3) uint8, each latent frame decoded as a one-frame clip."""
        b, f = latents.shape[:2]
        mean = torch.tensor(self.vae.config.latents_mean, device=self.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.vae.config.latents_std, device=self.device).view(1, -1, 1, 1, 1)
        z = latents.float().flatten(0, 1)[:, :, None] * std + mean  # (B*F, C, 1, h, w)
        rgb = self.vae.decode(z.to(next(self.vae.parameters()).dtype)).sample[:, :, 0]  # (B*F, 3, H, W) in [-1, 1]
        out = rgb.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
        return out.permute(0, 2, 3, 1).reshape(b, f, *out.shape[2:], 3).cpu().numpy()


def random_parts(cfg: WanConfig, seed: int = 0):
    """(model, text, vae) with random weights (seeded): wan-tiny's, or the full dimensions untrained."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CausalWan(cfg)
        tok = tiny_tokenizer(cfg.max_prompt_tokens)
        text = WanText(tok, tiny_encoder(len(tok), cfg.text_dim), cfg.max_prompt_tokens)
        vae = AutoencoderKLWan(base_dim=cfg.vae_base_dim, z_dim=cfg.latent_channels, dim_mult=[1, 2, 2, 2], num_res_blocks=1)
    return model, text, vae


def local_parts(cfg: WanConfig, folder: str | Path):
    """(model, text, vae) from a local folder: one causal transformer checkpoint at its top level
    (Self-Forcing / CausVid / LongLive layout), and tokenizer/, text_encoder/, vae/ (diffusers layout)."""
    offline()
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Wan weights folder {str(folder)!r} does not exist; weights are never downloaded")
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    with torch.device("meta"):  # no random init of weights about to be overwritten (5.7 GB at 1.3B)
        model = CausalWan(cfg)
    model.net.to_empty(device="cpu")
    load_transformer(model.net, find_checkpoint(folder))
    model.net.rope = WanRotaryPosEmbed(cfg.dim // cfg.num_heads, (1, 2, 2), cfg.rope_max_frames)  # its tables are not in the file
    tok, enc = load_local(folder)
    return model, WanText(tok, enc, cfg.max_prompt_tokens), load_vae(folder)


def load(name: str, weights: str | None = None, device: str = "cpu", **changes) -> WanGenerator:
    """The registry's loader: preset ``name`` ('wan-tiny', 'wan-1.3b'), random weights when ``weights`` is None."""
    cfg = preset(name, **changes)
    parts = random_parts(cfg) if weights is None else local_parts(cfg, weights)
    return WanGenerator(cfg, *parts, device=device)


def widths(name: str, weights: str | None = None) -> tuple[int, int]:
    """(d_feature, d_prompt) of a preset, without building it."""
    cfg = preset(name)
    return cfg.dim, cfg.dim

