"""Generate videos scene by scene with a context strategy, through the generator protocol only.

At every scene change the strategy chooses K candidates of the pool and the cache keeps them
(with the sink and the window) as the context of that scene's blocks. Every backend runs this
same loop, so a strategy behaves the same on the tiny StoryWorld model and on a Wan model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import ContextConfig
from .context.base import ContextStrategy, SelectionState
from .prompts import PromptSet
from .protocol import Generator


@dataclass
class GenerationResult:
    frames: np.ndarray  # (B, T, H, W, 3) uint8
    ms_per_frame: np.ndarray  # (T,) wall milliseconds per frame and video (batch time / B): selection and generation
    decode_ms_per_frame: np.ndarray  # (T,) the same for decoding to RGB, measured apart
    context_tokens: np.ndarray  # (T,) past tokens the frame attended to
    selections: list = field(default_factory=list)  # per scene: (B, K) pool indices, -1 unused
    gathered_bytes: list = field(default_factory=list)  # per scene change: KV bytes gathered per video
    history_bytes: list = field(default_factory=list)  # per scene change: bytes of a whole-history gather


def _clock(result) -> float:
    """perf_counter once ``result`` exists: CUDA work is asynchronous, so wait for it first."""
    if isinstance(result, torch.Tensor) and result.is_cuda:
        torch.cuda.synchronize(result.device)
    return time.perf_counter()


def _check_batch(prompt_sets: list[PromptSet], frames_per_scene: int, frames_per_block: int) -> int:
    if not prompt_sets:
        raise ValueError("generate needs at least one prompt set")
    lengths = {ps.n_scenes for ps in prompt_sets}
    if len(lengths) != 1:
        raise ValueError(f"every prompt set of a batch must have the same number of scenes, got {sorted(lengths)}; "
                         f"batch them by scene count")  # fmt: skip
    if frames_per_scene % frames_per_block:
        raise ValueError(f"frames_per_scene ({frames_per_scene}) must be a multiple of the backend's frames_per_block ({frames_per_block})")
    return lengths.pop()


def generate(gen: Generator, prompt_sets: list[PromptSet], strategy: ContextStrategy, seed: int = 0,
             frames_per_scene: int | None = None, ctx: ContextConfig | None = None,
             progress: Callable[[int, int], None] | None = None, shared_noise: bool = False, tree: bool = False) -> GenerationResult:  # fmt: skip
    """One video per prompt set. The noise depends only on ``seed`` and the batch layout, so two
    strategies run with the same seed see the same noise (a paired comparison). ``shared_noise``:
    every video of the batch gets the same noise (copies of one prompt set that then differ only
    by their selections). ``tree``: the videos are branches (copies of one prompt set): after each
    scene every video continues from video 0's history, so at every scene change the B selections
    act on one shared history; video b's frames are then its own branch of each scene, and the
    history is video 0's. ``frames_per_scene`` and ``ctx`` default to the backend's own."""
    for t, out in generate_stepwise(gen, prompt_sets, strategy, seed, frames_per_scene, ctx, shared_noise, tree):
        if progress is not None:
            progress(t + 1, len(out.ms_per_frame))
    return out


@torch.no_grad()  # also for a generator function: grad stays off whenever it resumes
def generate_stepwise(gen: Generator, prompt_sets: list[PromptSet], strategy: ContextStrategy, seed: int = 0,
                      frames_per_scene: int | None = None, ctx: ContextConfig | None = None,
                      shared_noise: bool = False, tree: bool = False) -> Iterator[tuple[int, GenerationResult]]:  # fmt: skip
    """``generate`` one block at a time: yields (last frame index, the result so far) after each
    block, the result's arrays filling in place, so that a caller can interleave two generations."""
    spec = gen.spec
    fps, ctx = frames_per_scene or spec.frames_per_scene, ctx or spec.context
    n_scenes = _check_batch(prompt_sets, fps, spec.frames_per_block)
    if tree and len({ps.id for ps in prompt_sets}) != 1:
        raise ValueError("tree generation makes branches of one prompt set: pass copies of it, [prompt_set] * G")
    strategy.check(prompt_sets)
    b, total = len(prompt_sets), n_scenes * fps
    text = gen.encode_prompts([p for ps in prompt_sets for p in ps.scenes])
    cache = gen.new_cache(b, total, fps, ctx, strategy.full_history, strategy.uses_sink)
    noise, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    frames = np.zeros((b, total, *spec.frame_shape, 3), np.uint8)
    out = GenerationResult(frames, np.zeros(total), np.zeros(total), np.zeros(total, np.int64))
    rows_of_scene = lambda sc: torch.arange(b, device=text.tokens.device) * n_scenes + sc  # noqa: E731
    for sc in range(n_scenes):
        start = time.perf_counter()
        scene_text = text.index(rows_of_scene(sc))
        if tree and sc:
            cache.reindex(np.zeros(b, np.int64))  # every branch continues from video 0's history
        if not strategy.full_history:
            past = np.broadcast_to(frames[:1, : sc * fps], (b, sc * fps, *frames.shape[2:])) if tree else frames[:, : sc * fps]
            state = SelectionState(sc, prompt_sets, fps, ctx.budget_k, cache.pool(), past, rng,
                                   gen.prompt_query(scene_text) if strategy.reads_prompt_query else None,
                                   cache.latest_features() if strategy.reads_latest else None)  # fmt: skip
            sel = strategy.select(state)
            cache.select(sel)
            out.selections.append(sel)
            out.gathered_bytes.append(sel.shape[1] * spec.kv_bytes_per_token)
            out.history_bytes.append(sc * fps * spec.tokens_per_frame * spec.kv_bytes_per_token)
        for _ in range(fps // spec.frames_per_block):
            first = cache.next_frame
            latents = gen.next_block(cache, scene_text, noise, shared_noise)
            made = _clock(latents)
            block = gen.decode(latents)  # (B, F, H, W, 3)
            t = slice(first, first + block.shape[1])
            frames[:, t] = block
            out.context_tokens[t] = cache.context_tokens
            out.ms_per_frame[t] = (made - start) * 1000.0 / (b * block.shape[1])
            out.decode_ms_per_frame[t] = (_clock(block) - made) * 1000.0 / (b * block.shape[1])
            yield t.stop - 1, out
            start = time.perf_counter()
