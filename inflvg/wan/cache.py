"""The Wan backend's KV cache (``inflvg.protocol.VideoCache``) in the fixed-budget layout:

    context = sink (first block)  +  K tokens selected from the long-term pool
              + window (the last W frames)  +  the block being made

A latent frame's keys/values are written once, when its block is re-run clean (timestep 0, as
Self-Forcing writes its cache). A frame that leaves the window enters the long-term pool, which
is preallocated for the whole video, optionally in pinned host memory (``pool_on_host``): then
only the K selected tokens travel to the device, at a scene change. The candidates' features
are the keys of one layer (``WanConfig.feature_layer``), kept beside the pool.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import ContextConfig
from ..protocol import Pool
from .model import CausalWan, Context


class WanCache:
    def __init__(self, model: CausalWan, n_videos: int, n_frames: int, frames_per_scene: int, ctx: ContextConfig,
                 full_history: bool, uses_sink: bool, dtype: torch.dtype, pool_on_host: bool = False):  # fmt: skip
        cfg, dev = model.cfg, model.net.proj_out.weight.device
        self.model, self.ctx, self.full_history, self.uses_sink = model, ctx, full_history, uses_sink
        self.n_videos, self.frames_per_scene, self.device = n_videos, frames_per_scene, dev
        self.next_frame, self.context_tokens = 0, 0
        self.n_tok = cfg.tokens_per_frame
        cap = n_frames * self.n_tok
        where = "cpu" if pool_on_host else dev
        pin = pool_on_host and torch.cuda.is_available()
        self.pool_kv = torch.zeros(cfg.num_layers, 2, n_videos, cap, cfg.dim, dtype=dtype, device=where, pin_memory=pin)
        self.pool_features = torch.zeros(n_videos, cap, cfg.dim, dtype=dtype, device=dev)  # (B, cap, dim)
        self.pool_frame = np.zeros(cap, np.int64)
        self.pool_len = 0
        self.frames: dict[int, torch.Tensor] = {}  # frame -> (L, 2, B, n, dim) on the device
        self.selected: Context | None = None

    def add(self, first: int, kv: torch.Tensor) -> None:
        """The clean keys/values (L, 2, B, F * n, dim) of frames first..first+F-1."""
        for j, f in enumerate(range(first, first + kv.shape[3] // self.n_tok)):
            self.frames[f] = kv[:, :, :, j * self.n_tok : (j + 1) * self.n_tok]
        last = first + kv.shape[3] // self.n_tok - 1
        for f in sorted(self.frames):
            if self.ctx.sink_frames <= f <= last - self.ctx.window_frames and not self.full_history:
                self._to_pool(f)

    def _to_pool(self, f: int) -> None:
        kv = self.frames.pop(f)
        a, b = self.pool_len, self.pool_len + self.n_tok
        self.pool_kv[:, :, :, a:b] = kv.to(self.pool_kv.device, non_blocking=True)
        self.pool_features[:, a:b] = kv[self.model.cfg.feature_layer, 0]
        self.pool_frame[a:b] = f
        self.pool_len = b

    def pool(self) -> Pool:
        """The candidates now: every token that has left the window, frame by frame, row-major."""
        gh, gw = self.model.cfg.grid
        frame = self.pool_frame[: self.pool_len].copy()
        tok = np.tile(np.arange(self.n_tok), self.pool_len // self.n_tok)
        return Pool(self.pool_features[:, : self.pool_len], frame, frame // self.frames_per_scene, tok // gw, tok % gw, (gh, gw))

    def select(self, selected: np.ndarray) -> None:
        """(B, K) pool indices, -1 for an empty slot: gathered where the pool lives, then K tokens to the device."""
        idx = torch.as_tensor(selected, dtype=torch.long).clamp(min=0)
        rows = torch.arange(idx.shape[0])[:, None]
        kv = self.pool_kv[:, :, rows.to(self.pool_kv.device), idx.to(self.pool_kv.device)]  # (L, 2, B, K, dim)
        pos = self._pos(torch.as_tensor(self.pool_frame)[idx], idx % self.n_tok)
        self.selected = Context(kv.to(self.device, non_blocking=True), pos.to(self.device),
                                torch.as_tensor(selected >= 0, device=self.device))  # fmt: skip

    def latest_features(self) -> torch.Tensor | None:
        """(B, n, dim) the newest frame's features (its keys at the feature layer), None before any frame."""
        t = self.next_frame - 1
        if t in self.frames:
            return self.frames[t][self.model.cfg.feature_layer, 0]
        if self.pool_len and self.pool_frame[self.pool_len - 1] == t:  # a window of 0 frames: already in the pool
            return self.pool_features[:, self.pool_len - self.n_tok : self.pool_len]
        return None

    def reindex(self, rows: np.ndarray) -> None:
        """(B,) video b continues from video rows[b]'s history (``VideoCache.reindex``), gathered where each part lives."""
        idx, pinned = torch.as_tensor(rows, dtype=torch.long), self.pool_kv.is_pinned()
        self.pool_kv = self.pool_kv[:, :, idx.to(self.pool_kv.device)]
        if pinned:  # indexing drops the pinning that makes the transfer of a selection asynchronous
            self.pool_kv = self.pool_kv.pin_memory()
        on = idx.to(self.device)
        self.pool_features = self.pool_features[on]
        self.frames = {f: kv[:, :, on] for f, kv in self.frames.items()}
        if self.selected is not None:
            self.selected = Context(self.selected.kv[:, :, on], self.selected.pos[on], self.selected.valid[on])

    def _pos(self, frame: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        gw = self.model.cfg.grid[1]
        return torch.stack([frame, token // gw, token % gw], -1).long()

    def _frames_context(self, frames: list[int]) -> Context:
        kv = torch.cat([self.frames[f] for f in frames], 3)
        pos = self.model.positions(torch.tensor(frames, device=self.device))
        valid = torch.ones(self.n_videos, kv.shape[3], dtype=torch.bool, device=self.device)
        return Context(kv, pos.expand(self.n_videos, -1, -1), valid)

    def context(self) -> Context | None:
        """What the next block attends to: the whole history, or [sink] + selected + window."""
        t = self.next_frame
        if self.full_history:
            return self._frames_context(list(range(t))) if t else None
        ns, w = self.ctx.sink_frames, self.ctx.window_frames
        sink = [f for f in range(ns) if f < t] if self.uses_sink else []
        window = list(range(max(len(sink), t - w), t))
        parts = [self._frames_context(sink)] if sink else []
        parts += [self.selected] if self.selected is not None and self.selected.n_tokens else []
        parts += [self._frames_context(window)] if window else []
        if not parts:
            return None
        return Context(torch.cat([p.kv for p in parts], 3), torch.cat([p.pos for p in parts], 1), torch.cat([p.valid for p in parts], 1))
