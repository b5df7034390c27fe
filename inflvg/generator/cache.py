"""The explicit KV cache of the fixed budget:

    context = sink (first frames, full resolution, kept forever)
            + K selected tokens from the long-term pool (compressed frames that left the window)
            + window (last W frames, full resolution)

Positions: every cached token keeps the (t, y, x) of the frame it came from; keys are stored
unrotated and rotated when the context is assembled (rope.py), so temporal distance to the
current frame is always the true one (FLEX scaling handles distances beyond the horizon).
A frame's long-term tokens are encoded when the frame is made and enter the pool when it leaves
the window. The pool is preallocated for the whole video, so a selection is one gather of K
tokens whatever the video length.

``KVCache`` is the StoryWorld backend's ``inflvg.protocol.VideoCache``: besides the tokens it
keeps the generation's position (``next_frame``), the current selection and the temporal RoPE
frequencies of the whole video.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import ContextConfig
from ..protocol import Pool
from .model import Context, Generator


class KVCache:
    def __init__(self, model: Generator, n_videos: int, total_frames: int, ctx: ContextConfig, full_history: bool,
                 frames_per_scene: int = 1, uses_sink: bool = True):  # fmt: skip
        cfg = model.cfg
        self.model, self.ctx, self.full_history = model, ctx, full_history
        self.n_videos, self.frames_per_scene, self.uses_sink = n_videos, frames_per_scene, uses_sink
        self.next_frame, self.context_tokens = 0, 0
        self.selected: Context | None = None
        self.t_freqs = model.t_freqs(total_frames)
        self.n_full, self.n_long = model.tokens_per_frame, model.long_tokens_per_frame
        cap = total_frames * self.n_long
        dev = model.full_yx.device
        self.pool_kv = torch.zeros(cfg.n_layers, 2, n_videos, cap, cfg.d_model, device=dev)  # (L, 2, B, cap, d)
        self.pool_features = torch.zeros(n_videos, cap, cfg.d_model, device=dev)  # (B, cap, d)
        self.pool_pos = torch.zeros(cap, 3, device=dev)  # (cap, 3) (t, y, x)
        self.pool_len = 0
        self.full: dict[int, torch.Tensor] = {}  # frame -> (L, 2, B, n_full, d)
        self.pending_long: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # frame -> (kv, features)

    @property
    def pool_frames(self) -> torch.Tensor:
        """(N,) frame index of every token in the pool."""
        return self.pool_pos[: self.pool_len, 0].long()

    def pool(self) -> Pool:
        """The candidates of a selection now: every token that has left the window."""
        frames = self.pool_frames.cpu().numpy()
        g = round(self.n_long**0.5)
        token = np.tile(np.arange(self.n_long), self.pool_len // self.n_long)
        return Pool(self.pool_features[:, : self.pool_len], frames, frames // self.frames_per_scene, token // g, token % g, (g, g))

    def select(self, selected: np.ndarray) -> None:
        """(B, K) pool indices, -1 for an empty slot: the long-term context from now on."""
        self.selected = self.gather(torch.as_tensor(selected, device=self.pool_kv.device))

    def latest_features(self) -> torch.Tensor | None:
        """(B, n_long, d) the newest frame's long-term features (still in the window), None before any frame."""
        t = self.next_frame - 1
        if t in self.pending_long:
            return self.pending_long[t][1]
        if self.pool_len and int(self.pool_pos[self.pool_len - 1, 0]) == t:  # a window of 0 frames: already in the pool
            return self.pool_features[:, self.pool_len - self.n_long : self.pool_len]
        return None

    def reindex(self, rows: np.ndarray) -> None:
        """(B,) video b continues from video rows[b]'s history (``VideoCache.reindex``)."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.pool_kv.device)
        self.pool_kv = self.pool_kv[:, :, idx]
        self.pool_features = self.pool_features[idx]
        self.full = {f: kv[:, :, idx] for f, kv in self.full.items()}
        self.pending_long = {f: (kv[:, :, idx], feats[idx]) for f, (kv, feats) in self.pending_long.items()}
        if self.selected is not None:
            self.selected = Context(self.selected.kv[:, :, idx], self.selected.pos[idx], self.selected.valid[idx])

    @property
    def bytes_per_token(self) -> int:
        """Key and value of one token in every layer, fp32."""
        return self.model.cfg.n_layers * 2 * self.model.cfg.d_model * 4

    def add(self, t: int, kv_full: torch.Tensor, kv_long: torch.Tensor, long_features: torch.Tensor) -> None:
        """Cache frame t; frames that leave the window move to the pool (compressed)."""
        self.full[t] = kv_full
        self.pending_long[t] = (kv_long, long_features)
        leaving = t - self.ctx.window_frames
        if leaving >= self.ctx.sink_frames:
            self._to_pool(leaving)

    def _to_pool(self, f: int) -> None:
        kv, feats = self.pending_long.pop(f)
        a, b = self.pool_len, self.pool_len + self.n_long
        self.pool_kv[:, :, :, a:b] = kv
        self.pool_features[:, a:b] = feats
        self.pool_pos[a:b, 0] = float(f)
        self.pool_pos[a:b, 1:] = self.model.long_yx
        self.pool_len = b
        if not self.full_history:
            del self.full[f]

    def gather(self, selected: torch.Tensor) -> Context:
        """selected (B, K) long indices into the pool, -1 for an empty slot -> Context of K tokens."""
        idx = selected.clamp(min=0)
        rows = torch.arange(idx.shape[0], device=idx.device)[:, None]
        kv = self.pool_kv[:, :, rows, idx]  # (L, 2, B, K, d)
        return Context(kv=kv, pos=self.pool_pos[idx], valid=selected >= 0)

    def _frames_context(self, frames: list[int], n_videos: int) -> Context:
        kv = torch.cat([self.full[f] for f in frames], 3)
        yx = self.model.full_yx
        pos = torch.cat([torch.cat([torch.full((len(yx), 1), float(f), device=yx.device), yx], 1) for f in frames])
        valid = torch.ones(n_videos, kv.shape[3], dtype=torch.bool, device=kv.device)
        return Context(kv=kv, pos=pos.expand(n_videos, -1, -1), valid=valid)

    def context(self, t: int, selected: Context | None, use_sink: bool, n_videos: int) -> Context | None:
        """What frame t attends to: the whole history, or [sink] + selected + window."""
        if self.full_history:
            return self._frames_context(list(range(t)), n_videos) if t > 0 else None
        ns, w = self.ctx.sink_frames, self.ctx.window_frames
        sink = [f for f in range(ns) if f < t] if use_sink else []
        window = list(range(max(len(sink), t - w), t))
        parts = []
        if sink:
            parts.append(self._frames_context(sink, n_videos))
        if selected is not None and selected.n_tokens:
            parts.append(selected)
        if window:
            parts.append(self._frames_context(window, n_videos))
        if not parts:
            return None
        return Context(
            kv=torch.cat([p.kv for p in parts], 3),
            pos=torch.cat([p.pos for p in parts], 1),
            valid=torch.cat([p.valid for p in parts], 1),
        )
