"""A Wan2.1 transformer made block-causal with an explicit KV context.

The parameters are ``diffusers``' ``WanTransformer3DModel`` (patchify 1x2x2, 3D RoPE split over
t/h/w, adaLN time modulation, cross-attention to text, RMS-normed queries and keys); only the
self-attention is written here, because it attends to a context of cached keys/values (the
project's fixed-budget layout) besides the block being made. Cached keys are stored after
``norm_k`` and before RoPE, with the (t, h, w) of the token they came from, and rotated when the
context is assembled, so a token keeps its true position whatever else is kept.

``forward_sequence`` runs the same model over a whole sequence with a block-causal mask: the
reference the cached path must equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import WanConfig


@dataclass
class Context:
    """Past tokens a block attends to; keys stored after norm_k, before RoPE."""

    kv: torch.Tensor  # (n_layers, 2, B, N, dim)
    pos: torch.Tensor  # (B, N, 3) long (t, h, w)
    valid: torch.Tensor  # (B, N) bool

    @property
    def n_tokens(self) -> int:
        return self.kv.shape[3]


def build_transformer(cfg: WanConfig):
    """diffusers' WanTransformer3DModel with the dimensions of ``cfg`` (random weights)."""
    from diffusers.models.transformers.transformer_wan import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=cfg.num_heads, attention_head_dim=cfg.dim // cfg.num_heads,
        in_channels=cfg.latent_channels, out_channels=cfg.latent_channels, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
        rope_max_seq_len=cfg.rope_max_frames,
    )  # fmt: skip


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on consecutive pairs, as Wan: x (B, N, H, hd), cos/sin (B|1, N, 1, hd) repeated per pair."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], -1).flatten(-2).type_as(x)


class CausalWan(nn.Module):
    def __init__(self, cfg: WanConfig, net=None):
        super().__init__()
        self.cfg = cfg
        self.net = net if net is not None else build_transformer(cfg)
        hd = cfg.dim // cfg.num_heads
        self.split = [hd - 4 * (hd // 6), 2 * (hd // 6), 2 * (hd // 6)]  # rotary dims of t, h, w

    # ---- inputs -------------------------------------------------------------------------
    def embed_text(self, states: torch.Tensor) -> torch.Tensor:
        """Text encoder states (B, L, text_dim) -> cross-attention tokens (B, L, dim)."""
        return self.net.condition_embedder.text_embedder(states)

    def time_embedding(self, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps (M,) in [0, 1000] -> (temb (M, dim) for the head, modulation (M, 6, dim) for the blocks)."""
        emb = self.net.condition_embedder
        t = emb.timesteps_proj(timesteps.float())
        temb = emb.time_embedder(t.to(next(emb.time_embedder.parameters()).dtype))
        return temb, emb.time_proj(emb.act_fn(temb)).unflatten(1, (6, -1))

    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, F, C, h, w) -> (B, F * h/2 * w/2, dim) tokens, frame-major then row-major."""
        x = self.net.patch_embedding(latents.transpose(1, 2).to(self.net.patch_embedding.weight.dtype))
        return x.flatten(2).transpose(1, 2).contiguous()

    def positions(self, frames: torch.Tensor) -> torch.Tensor:
        """Frame indices (F,) -> (F * gh * gw, 3) long (t, h, w) of their tokens."""
        gh, gw = self.cfg.grid
        hh, ww = torch.meshgrid(torch.arange(gh, device=frames.device), torch.arange(gw, device=frames.device), indexing="ij")
        yx = torch.stack([hh, ww], -1).reshape(-1, 2)
        return torch.cat([frames.repeat_interleave(len(yx))[:, None], yx.repeat(len(frames), 1)], 1).long()

    def rope(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pos (..., N, 3) -> cos, sin (..., N, 1, head_dim) in fp32, from diffusers' tables."""
        cos, sin = self.net.rope.freqs_cos, self.net.rope.freqs_sin
        assert isinstance(cos, torch.Tensor) and isinstance(sin, torch.Tensor)  # buffers of diffusers' WanRotaryPosEmbed
        tabs = [t.float() for t in (cos, sin)]
        out = []
        for tab in tabs:
            parts = tab.split(self.split, dim=1)
            out.append(torch.cat([parts[a][pos[..., a]] for a in range(3)], -1).unsqueeze(-2))
        return out[0], out[1]

    # ---- blocks -------------------------------------------------------------------------
    def _attend(self, blk, x, rope_self, ctx_kv, rope_ctx, ctx_valid, mask):
        """Self-attention of tokens x (B, n, dim) over [context, x] -> (output (B, n, dim), this layer's (k, v))."""
        attn, b, n = blk.attn1, x.shape[0], x.shape[1]
        q, k, v = attn.norm_q(attn.to_q(x)), attn.norm_k(attn.to_k(x)), attn.to_v(x)
        heads = lambda t: t.unflatten(2, (attn.heads, -1))  # noqa: E731  (B, N, H, hd)
        qh, kh, vh = rotate(heads(q), *rope_self), rotate(heads(k), *rope_self), heads(v)
        if ctx_kv is not None:
            kh = torch.cat([rotate(heads(ctx_kv[0]), *rope_ctx), kh], 1)
            vh = torch.cat([heads(ctx_kv[1]), vh], 1)
            own = torch.ones(b, n, dtype=torch.bool, device=x.device)
            mask = torch.cat([ctx_valid, own], 1)[:, None, None, :]  # (B, 1, 1, N + n)
        out = F.scaled_dot_product_attention(qh.transpose(1, 2), kh.transpose(1, 2), vh.transpose(1, 2), attn_mask=mask)
        return attn.to_out[0](out.transpose(1, 2).flatten(2).type_as(x)), torch.stack([k, v])

    @staticmethod
    def _cross(blk, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Cross-attention of x (B, n, dim) to text (B, L, dim), or per frame to text (B, T, L, dim)."""
        if text.dim() == 3:
            return blk.attn2(x, text, None, None)
        b, frames = text.shape[:2]
        out = blk.attn2(x.reshape(b * frames, -1, x.shape[-1]), text.flatten(0, 1), None, None)
        return out.reshape(x.shape)

    def _block(self, blk, h, mod, text, rope_self, ctx_kv=None, rope_ctx=None, ctx_valid=None, mask=None):
        """One transformer layer as diffusers' WanTransformerBlock, with the self-attention above.
        mod (B, n|1, 6, dim) per-token modulation."""
        shift, scale, gate, c_shift, c_scale, c_gate = (blk.scale_shift_table.unsqueeze(0) + mod.float()).unbind(2)
        x = (blk.norm1(h.float()) * (1 + scale) + shift).type_as(h)
        a, kv = self._attend(blk, x, rope_self, ctx_kv, rope_ctx, ctx_valid, mask)
        h = (h.float() + a * gate).type_as(h)
        h = h + self._cross(blk, blk.norm2(h.float()).type_as(h), text)
        x = (blk.norm3(h.float()) * (1 + c_scale) + c_shift).type_as(h)
        return (h.float() + blk.ffn(x).float() * c_gate).type_as(h), kv

    def _head(self, h: torch.Tensor, temb: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Tokens (B, n, dim), temb (B, n|1, dim) -> flow (B, F, C, h, w)."""
        shift, scale = (self.net.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).unbind(2)
        out = self.net.proj_out((self.net.norm_out(h.float()) * (1 + scale) + shift).type_as(h))
        (gh, gw), c = self.cfg.grid, self.cfg.latent_channels
        out = out.reshape(h.shape[0], n_frames, gh, gw, 2, 2, c)  # (B, F, gh, gw, ph, pw, C)
        return out.permute(0, 1, 6, 2, 4, 3, 5).reshape(h.shape[0], n_frames, c, 2 * gh, 2 * gw).float()

    def forward_block(self, x: torch.Tensor, t: torch.Tensor, first_frame: int, text: torch.Tensor,
                      ctx: Context | None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """A block of latents x (B, F, C, h, w) at frames first_frame.. and timestep t (B,), attending to
        ``ctx`` and to itself -> (flow prediction (B, F, C, h, w), its keys/values (L, 2, B, n, dim))."""
        f = x.shape[1]
        pos = self.positions(torch.arange(first_frame, first_frame + f, device=x.device))[None]  # (1, n, 3)
        rope_self = self.rope(pos)
        rope_ctx = self.rope(ctx.pos) if ctx is not None else None
        temb, mod = self.time_embedding(t)
        h, kvs = self.patchify(x), []
        for i, blk in enumerate(self.net.blocks):
            ctx_kv = ctx.kv[i] if ctx is not None else None
            h, kv = self._block(blk, h, mod[:, None], text, rope_self, ctx_kv, rope_ctx, ctx.valid if ctx is not None else None)
            kvs.append(kv)
        return self._head(h, temb[:, None], f), torch.stack(kvs)

    def forward_sequence(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """The reference: every frame at once. x (B, T, C, h, w), t (B, T) per-frame timesteps,
        text (B, L, dim) or per frame (B, T, L, dim), allowed (T*n, T*n) bool (token i may attend
        to token j) -> flow (B, T, C, h, w)."""
        b, frames = x.shape[:2]
        n = self.cfg.tokens_per_frame
        pos = self.positions(torch.arange(frames, device=x.device))[None]
        temb, mod = self.time_embedding(t.flatten())
        temb = temb.unflatten(0, (b, frames)).repeat_interleave(n, 1)  # (B, T*n, dim)
        mod = mod.unflatten(0, (b, frames)).repeat_interleave(n, 1)  # (B, T*n, 6, dim)
        h, rope_self = self.patchify(x), self.rope(pos)
        for blk in self.net.blocks:
            h, _ = self._block(blk, h, mod, text, rope_self, mask=allowed[None, None])
        return self._head(h, temb, frames)
