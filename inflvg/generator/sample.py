"""Generate videos scene by scene with a context strategy and a fixed-budget KV cache."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from ..config import ContextConfig, WorldConfig
from ..context.base import ContextStrategy, SelectionState
from .cache import KVCache
from .model import Generator
from .tokens import to_uint8


@dataclass
class GenerationResult:
    frames: np.ndarray  # (B, T, H, W, 3) uint8
    ms_per_frame: np.ndarray  # (T,) wall milliseconds per frame and video (batch time / B)
    context_tokens: np.ndarray  # (T,) past tokens the frame attended to
    selections: list = field(default_factory=list)  # per scene: (B, K) pool indices, -1 unused
    gathered_bytes: list = field(default_factory=list)  # per scene change: KV bytes gathered per video
    history_bytes: list = field(default_factory=list)  # per scene change: bytes of a whole-history gather


def _check_batch(stories: list) -> int:
    if not stories:
        raise ValueError("stories must hold at least one story")
    lengths = {len(s.scenes) for s in stories}
    if len(lengths) != 1:
        raise ValueError(f"every story in a batch must have the same number of scenes, got {sorted(lengths)}")
    return lengths.pop()


def generate(
    model: Generator,
    stories: list,
    world: WorldConfig,
    ctx: ContextConfig,
    strategy: ContextStrategy,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    shared_noise: bool = False,
) -> GenerationResult:
    """Generate one video per story. The noise depends only on ``seed`` and the batch layout,
    so two strategies run with the same seed see the same noise (a paired comparison).
    ``shared_noise``: every video of the batch gets the same noise (a GRPO group: copies of one
    story whose rollouts then differ only by their selections)."""
    for t, out in generate_stepwise(model, stories, world, ctx, strategy, seed, shared_noise):
        if progress is not None:
            progress(t + 1, len(out.ms_per_frame))
    return out


@torch.no_grad()  # also for a generator function: grad stays off whenever it resumes
def generate_stepwise(
    model: Generator,
    stories: list,
    world: WorldConfig,
    ctx: ContextConfig,
    strategy: ContextStrategy,
    seed: int = 0,
    shared_noise: bool = False,
) -> Iterator[tuple[int, GenerationResult]]:
    """``generate`` one frame at a time: yields (t, the result so far) after frame t, the
    result's arrays filling in place, so that a caller can interleave two generations."""
    n_scenes = _check_batch(stories)
    b, fps, size = len(stories), world.frames_per_scene, model.frame_size
    total = n_scenes * fps
    dev = model.full_yx.device
    text = model.encode_text([p for s in stories for p in s.prompts()])
    t_freqs = model.t_freqs(total)
    cache = KVCache(model, b, total, ctx, strategy.full_history)
    noise_gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    frames = np.zeros((b, total, size, size, 3), np.uint8)
    out = GenerationResult(frames, np.zeros(total), np.zeros(total, np.int64))
    ms, n_ctx = out.ms_per_frame, out.context_tokens
    steps = model.cfg.denoise_steps
    for sc in range(n_scenes):
        rows = torch.arange(b, device=dev) * n_scenes + sc
        text_s = text.index(rows)
        selected = None
        start = time.perf_counter()
        if not strategy.full_history:
            state = SelectionState(
                scene=sc, stories=stories, frames_per_scene=fps, budget_k=ctx.budget_k,
                pool_frames=cache.pool_frames.cpu().numpy(), pool_tokens=np.tile(np.arange(cache.n_long), cache.pool_len // cache.n_long),
                features=cache.pool_features[:, : cache.pool_len], frames=frames[:, : sc * fps],
                prompts=[s.prompt(sc) for s in stories], rng=rng,
            )  # fmt: skip
            sel = strategy.select(state)
            out.selections.append(sel)
            selected = cache.gather(torch.as_tensor(sel, device=dev))
            out.gathered_bytes.append(sel.shape[1] * cache.bytes_per_token)
            out.history_bytes.append(sc * fps * cache.n_full * cache.bytes_per_token)
        for j in range(fps):
            t = sc * fps + j
            context = cache.context(t, selected, strategy.uses_sink, b)
            n_ctx[t] = 0 if context is None else context.n_tokens
            x = torch.randn(1 if shared_noise else b, size, size, 3, generator=noise_gen).expand(b, -1, -1, -1).to(dev)
            tt = torch.full((b,), t, device=dev)
            for k in range(steps):
                s = torch.full((b,), k / steps, device=dev)
                x = x + model.velocity(x, s, tt, text_s, context, t_freqs) / steps
            x = x.clamp(-1, 1)
            kv_full, _ = model.encode_frames(x, tt, text_s, long=False, t_freqs=t_freqs)
            kv_long, feats = model.encode_frames(x, tt, text_s, long=True, t_freqs=t_freqs)
            cache.add(t, kv_full, kv_long, feats)
            frames[:, t] = to_uint8(x)
            ms[t] = (time.perf_counter() - start) * 1000.0 / b
            yield t, out
            start = time.perf_counter()
