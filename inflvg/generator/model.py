"""The frame-autoregressive flow-matching transformer.

A frame's tokens are predicted together: bidirectional attention inside the frame, and
attention to a context of past-frame keys/values (causal across frames by construction).
Past frames are *encoded* once, each on its own with its scene prompt and the clean-time
embedding, and their per-layer keys/values are cached: full-resolution for the sink and the
window, compressed (merge x merge patches) for the long-term pool. Because a cached frame's
keys/values do not depend on which other frames were kept, any selection from the pool is a
valid context without recomputation. Denoising: rectified flow, x_s = (1-s) noise + s data,
sampled with a few Euler steps along the velocity (data - noise). The network predicts the clean
frame and the velocity is derived from it, (x_hat - x_s) / (1 - s): a network this small cannot
carry the noise through its residual stream, which velocity prediction would ask of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GeneratorConfig
from .rope import apply_rope, rope_tables, temporal_freqs
from .text import TextEncoder
from .tokens import grid_positions, patchify, unpatchify, with_time

TYPE_CURRENT, TYPE_FULL, TYPE_LONG = 0, 1, 2


@dataclass
class Text:
    tokens: torch.Tensor  # (B, L, d) prompt tokens projected to the model width
    mask: torch.Tensor  # (B, L) bool, True on real tokens
    pooled: torch.Tensor  # (B, d) the [CLS] token

    def index(self, idx: torch.Tensor) -> Text:
        return Text(self.tokens[idx], self.mask[idx], self.pooled[idx])


@dataclass
class Context:
    """Past-frame keys/values a frame attends to; keys are stored unrotated."""

    kv: torch.Tensor  # (n_layers, 2, B, N, d)
    pos: torch.Tensor  # (B, N, 3) (t, y, x)
    valid: torch.Tensor  # (B, N) bool, False on padding

    @property
    def n_tokens(self) -> int:
        return self.kv.shape[3]


def timestep_embedding(s: torch.Tensor, dim: int) -> torch.Tensor:
    """s (B,) in [0, 1] -> (B, dim) sinusoidal features."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=s.device) / half)
    ang = (s.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([ang.cos(), ang.sin()], -1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    def __init__(self, d: int, n_heads: int, mlp_ratio: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm_x = nn.LayerNorm(d)
        self.cross_q = nn.Linear(d, d)
        self.cross_kv = nn.Linear(d, 2 * d)
        self.cross_proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(approximate="tanh"), nn.Linear(mlp_ratio * d, d))
        self.ada = nn.Linear(d, 6 * d)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, nh, N, hd)

    def forward(self, h: torch.Tensor, cond: torch.Tensor, text: Text, rope_self: tuple[torch.Tensor, torch.Tensor],
                ctx_kv: torch.Tensor | None = None, rope_ctx: tuple[torch.Tensor, torch.Tensor] | None = None,
                ctx_valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """h (B, n, d); ctx_kv (2, B, N, d) or None. Returns h and this layer's (k, v) of h, unrotated."""
        b, n, d = h.shape
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(F.silu(cond)).chunk(6, -1)
        q, k, v = self.qkv(modulate(self.norm1(h), sh1, sc1)).chunk(3, -1)
        kv_out = torch.stack([k, v])  # (2, B, n, d)
        q, kh, vh = self.heads(q), self.heads(k), self.heads(v)
        q, kh = apply_rope(q, *rope_self), apply_rope(kh, *rope_self)
        mask = None
        if ctx_kv is not None:
            assert rope_ctx is not None and ctx_valid is not None, "a context needs its rotary tables and validity mask"
            ck = apply_rope(self.heads(ctx_kv[0]), *rope_ctx)
            kh, vh = torch.cat([ck, kh], 2), torch.cat([self.heads(ctx_kv[1]), vh], 2)
            own = torch.ones(b, n, dtype=torch.bool, device=h.device)
            mask = torch.cat([ctx_valid, own], 1)[:, None, None, :]  # (B, 1, 1, N + n)
        a = F.scaled_dot_product_attention(q, kh, vh, attn_mask=mask)
        h = h + g1[:, None] * self.proj(a.transpose(1, 2).reshape(b, n, d))
        ck, cv = self.cross_kv(text.tokens).chunk(2, -1)
        xa = F.scaled_dot_product_attention(
            self.heads(self.cross_q(self.norm_x(h))), self.heads(ck), self.heads(cv), attn_mask=text.mask[:, None, None, :]
        )
        h = h + self.cross_proj(xa.transpose(1, 2).reshape(b, n, d))
        h = h + g2[:, None] * self.mlp(modulate(self.norm2(h), sh2, sc2))
        return h, kv_out


class Generator(nn.Module):
    full_yx: torch.Tensor  # buffers registered in __init__, declared for the type checker
    long_yx: torch.Tensor

    def __init__(self, cfg: GeneratorConfig, frame_size: int):
        super().__init__()
        self.cfg, self.frame_size = cfg, frame_size
        d, p, m = cfg.d_model, cfg.patch, cfg.merge
        self.text = TextEncoder(cfg.d_text, cfg.text_layers, cfg.max_prompt_tokens)
        self.text_proj = nn.Linear(cfg.d_text, d)
        # each word also reaches cross-attention directly: a colour word is 2% of a prompt and
        # would otherwise have to survive a randomly initialised encoder to steer 10% of the pixels
        self.word_emb = nn.Embedding(len(self.text.tokenizer), d)
        nn.init.normal_(self.word_emb.weight, std=0.02)
        self.patch_in = nn.Linear(p * p * 3, d)
        self.long_in = nn.Linear((p * m) ** 2 * 3, d)
        self.type_emb = nn.Parameter(torch.randn(3, d) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(Block(d, cfg.n_heads, cfg.mlp_ratio) for _ in range(cfg.n_layers))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False)
        self.ada_out = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, p * p * 3)
        for lin in (self.ada_out, self.out):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.register_buffer("full_yx", grid_positions(frame_size, p, 1), persistent=False)
        self.register_buffer("long_yx", grid_positions(frame_size, p, m), persistent=False)

    @property
    def head_dim(self) -> int:
        return self.cfg.d_model // self.cfg.n_heads

    @property
    def tokens_per_frame(self) -> int:
        return self.full_yx.shape[0]

    @property
    def long_tokens_per_frame(self) -> int:
        return self.long_yx.shape[0]

    def encode_text(self, prompts: list[str]) -> Text:
        hidden, mask, ids = self.text(prompts)
        tokens = self.text_proj(hidden) + self.word_emb(ids)
        return Text(tokens, mask, tokens[:, 0])

    def t_freqs(self, max_distance: float) -> torch.Tensor:
        nt = max(1, self.head_dim // 8)
        return temporal_freqs(nt, self.cfg.horizon_frames, max_distance, self.cfg.rope_scaling, self.full_yx.device)

    def _run(self, h, cond, text, pos, t_freqs, ctx: Context | None):
        rope_self = rope_tables(pos, self.head_dim, t_freqs)
        rope_ctx = rope_tables(ctx.pos, self.head_dim, t_freqs) if ctx is not None else None
        kvs = []
        for i, blk in enumerate(self.blocks):
            ctx_kv = ctx.kv[i] if ctx is not None else None
            h, kv = blk(h, cond, text, rope_self, ctx_kv, rope_ctx, ctx.valid if ctx is not None else None)
            kvs.append(kv)
        return h, torch.stack(kvs)  # (B, n, d), (n_layers, 2, B, n, d)

    def encode_frames(self, frames: torch.Tensor, t: torch.Tensor, text: Text, long: bool, t_freqs: torch.Tensor):
        """Clean frames (B, H, W, 3) in [-1, 1] at frame indices t (B,) -> (kv (L, 2, B, n, d), hidden (B, n, d)).

        long=False: full-resolution tokens (sink and window); long=True: compressed long-term tokens.
        """
        if long:
            side, yx, emb, kind = self.cfg.patch * self.cfg.merge, self.long_yx, self.long_in, TYPE_LONG
        else:
            side, yx, emb, kind = self.cfg.patch, self.full_yx, self.patch_in, TYPE_FULL
        h = emb(patchify(frames, side)) + self.type_emb[kind]
        pos = torch.cat([t[:, None, None].float().expand(-1, yx.shape[0], 1), yx.expand(len(t), -1, -1)], -1)
        cond = self.time_mlp(timestep_embedding(torch.ones(len(t), device=h.device), h.shape[-1])) + text.pooled
        h, kv = self._run(h, cond, text, pos, t_freqs, None)
        return kv, h

    def velocity(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, text: Text, ctx: Context | None, t_freqs) -> torch.Tensor:
        """Noisy frames x (B, H, W, 3) at flow time s (B,) < 1 -> velocity (B, H, W, 3)."""
        clean = self.predict_clean(x, s, t, text, ctx, t_freqs)
        return (clean - x) / (1 - s)[:, None, None, None]

    def predict_clean(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, text: Text, ctx: Context | None, t_freqs) -> torch.Tensor:
        """Noisy frames x (B, H, W, 3) at flow time s (B,), frame index t (B,) -> clean frames (B, H, W, 3)."""
        p = self.cfg.patch
        h = self.patch_in(patchify(x, p)) + self.type_emb[TYPE_CURRENT]
        yx = self.full_yx
        pos = torch.cat([t[:, None, None].float().expand(-1, yx.shape[0], 1), yx.expand(len(t), -1, -1)], -1)
        cond = self.time_mlp(timestep_embedding(s, h.shape[-1])) + text.pooled
        h, _ = self._run(h, cond, text, pos, t_freqs, ctx)
        shift, scale = self.ada_out(F.silu(cond)).chunk(2, -1)
        return unpatchify(self.out(modulate(self.norm_out(h), shift, scale)), p, self.frame_size)


__all__ = ["Context", "Generator", "Text", "with_time"]
