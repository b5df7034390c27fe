"""The benchmark's two phases: quality on a prompt set, and cost by video length."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
from tqdm import tqdm

from ..config import ContextConfig, WorldConfig
from ..context.base import ContextStrategy
from ..generate import generate, generate_stepwise
from ..prompts import PromptSet
from ..protocol import Generator
from ..world.eps import sample_prompt_set
from ..world.story import Story
from .quality import METRICS, bootstrap_ci, by_visit, drift, identity_drift, mean_ci, per_scene_table, per_video_table, score_video


@dataclass(frozen=True)
class BenchSetup:
    gen: Generator
    ctx: ContextConfig
    seed: int
    batch: int = 16

    @property
    def frames_per_scene(self) -> int:
        return self.gen.spec.frames_per_scene

    @property
    def scenes_per_horizon(self) -> int:
        """Scenes of a video at the backend's training horizon (1x)."""
        return self.gen.spec.horizon_frames // self.frames_per_scene


class Progress:
    """``generate``'s ``progress(done, total)`` callback as a tqdm bar of frames on stderr, closed
    at the last frame. Off where several processes share the terminal (``Progress.enabled = False``
    in the benchmark's worker processes: their parent shows the tasks done instead)."""

    enabled = True

    def __init__(self, label: str):
        self.label, self.bar = label, None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.label, unit="frame", file=sys.stderr, disable=not self.enabled)
        self.bar.update(done - self.bar.n)
        if done == total:
            self.bar.close()


def run_quality(setup: BenchSetup, strategy: ContextStrategy, prompt_sets: list[PromptSet],
                truths: list[Story | None]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:  # fmt: skip
    """Per-video metric arrays of one strategy and its per-scene ones (``per_scene_table``, for the
    drift curves); batches keep their seed, whatever the strategy, so strategies are paired (the same noise).
    ``truths``: each prompt set's StoryWorld story, or None (free text). A batch holds prompt sets
    of one scene count: a file that mixes counts is generated count by count."""
    scores = []
    by_length: dict[int, list[int]] = {}
    for i, ps in enumerate(prompt_sets):
        by_length.setdefault(ps.n_scenes, []).append(i)
    order = [i for idx in by_length.values() for i in idx]
    fps = setup.frames_per_scene
    for start in range(0, len(order), setup.batch):
        idx = order[start : start + setup.batch]
        cuts = [j for j in range(1, len(idx)) if prompt_sets[idx[j]].n_scenes != prompt_sets[idx[j - 1]].n_scenes]
        for a, b in zip([0, *cuts], [*cuts, len(idx)], strict=True):
            part = idx[a:b]
            res = generate(setup.gen, [prompt_sets[i] for i in part], strategy, seed=setup.seed + start + a, ctx=setup.ctx,
                           progress=Progress(f"{strategy.name} videos {start + a + 1}-{start + b}/{len(order)}"))  # fmt: skip
            scores += [(i, score_video(prompt_sets[i], truths[i], f, fps)) for i, f in zip(part, res.frames, strict=True)]
    scores.sort(key=lambda x: x[0])
    return per_video_table([s for _, s in scores]), per_scene_table([s for _, s in scores])


def summarize(table: dict[str, np.ndarray]) -> dict:
    out = {}
    for m in METRICS:
        mean, lo, hi = mean_ci(table[m])
        out[m] = mean
        out.setdefault("ci95", {})[m] = [lo, hi]
    return out


def summarize_length(table: dict[str, np.ndarray], scenes: dict[str, np.ndarray]) -> dict:
    """One length's block of a strategy's entry: ``summarize`` plus the drift curves by scene index, the
    no-drift check on identity (``identity_drift``; None for videos of 9 scenes or fewer) and the right
    character on returns by visit (``returns_by_visit``: first return, second, third and later)."""
    return summarize(table) | {"videos": len(table["combined"]), "scenes": scenes["combined"].shape[1], "drift": drift(scenes),
                               "identity_drift": identity_drift(scenes["identity"]),
                               "returns_by_visit": by_visit(scenes["returns"], scenes["visit"])}  # fmt: skip


def paired(tables: dict[str, dict[str, np.ndarray]], a: str, b: str) -> dict:
    """Mean per-video difference a - b with its 95% interval, for every metric."""
    out = {}
    for m in METRICS:
        mean, lo, hi = mean_ci(tables[a][m] - tables[b][m])
        out[m] = {"mean": mean, "ci95": [lo, hi]}
    return out


HEURISTICS = ("full", "window", "sink_window", "far", "random", "prompt_match", "memflow", "rag", "fademem")
BUDGETED = HEURISTICS[1:]  # the heuristics that keep the same fixed budget as the policy


def gap_closed(tables: dict[str, dict[str, np.ndarray]], metric: str = "combined", n_boot: int = 2000, seed: int = 0,
               candidates: tuple[str, ...] = HEURISTICS) -> dict:  # fmt: skip
    """How much of the gap between the best heuristic and oracle-K the learned policy closes:
    (learned - best) / (oracle - best) on ``metric``, with a 95% bootstrap interval over videos
    (resampled jointly, so the three stay paired). The best of ``candidates`` is chosen on the means."""
    heuristics = [h for h in candidates if h in tables]
    best = max(heuristics, key=lambda h: np.nanmean(tables[h][metric]))
    lv, hv, ov = (tables[n][metric] for n in ("learned", best, "oracle"))
    keep = ~(np.isnan(lv) | np.isnan(hv) | np.isnan(ov))
    lv, hv, ov = lv[keep], hv[keep], ov[keep]
    if ov.mean() <= hv.mean():  # oracle-K no better than the heuristic: there is no gap to close
        return {"best_heuristic": best, "metric": metric, "fraction": float("nan"), "ci95": [float("nan"), float("nan")]}

    def fraction(learned, heuristic, oracle, axis=-1):
        return (learned.mean(axis) - heuristic.mean(axis)) / (oracle.mean(axis) - heuristic.mean(axis))

    ci = bootstrap_ci((lv, hv, ov), fraction, n_boot, seed)
    return {"best_heuristic": best, "metric": metric, "fraction": float(fraction(lv, hv, ov)), "ci95": ci}


def run_timing(setup: BenchSetup, strategy: ContextStrategy, multiples: list[int], n_videos: int = 1) -> dict:
    """Cost by video length, from one video of the longest length: a shorter video is its prefix,
    so length L's figures come from its L-th horizon (ms per frame, context tokens) and from its
    first L horizons (KV bytes per scene change, as a video of length L gathers them).

    The machine's load changes while a long video runs, so every frame of it alternates with a
    frame of 1x videos made alongside; ``ms_ratio_to_1x`` compares each horizon with the 1x frames
    made during it, both under the same load. The first scene is left out at 1x (less context)."""
    fps, n_scenes, horizon = setup.frames_per_scene, setup.scenes_per_horizon, setup.gen.spec.horizon_frames
    longest = max(multiples)
    prompt_sets = _timing_prompt_sets(setup.seed + 10_000, n_videos, n_scenes * longest)
    alongside = _one_x_frames(setup, strategy, n_videos)
    progress = Progress(f"{strategy.name} timing up to {longest}x ({longest * horizon} frames, as many 1x alongside)")
    one_x = np.full(longest * horizon, np.nan)
    res = None
    for t, so_far in generate_stepwise(setup.gen, prompt_sets, strategy, seed=setup.seed, ctx=setup.ctx):
        one_x[t - setup.gen.spec.frames_per_block + 1 : t + 1] = next(alongside)
        progress(t + 1, len(one_x))
        res = so_far  # after the last block: the whole generation
    assert res is not None, "a timing video has at least one block"
    keys = ("ms_per_frame", "decode_ms_per_frame", "ms_ratio_to_1x", "context_tokens", "kv_bytes_per_transition", "history_kv_bytes_per_transition")
    out = {key: {} for key in keys}
    for mult in multiples:
        frames = slice(max((mult - 1) * horizon, fps), mult * horizon)
        ms, key = float(np.median(res.ms_per_frame[frames])), str(mult)
        out["ms_per_frame"][key] = ms
        out["decode_ms_per_frame"][key] = float(np.median(res.decode_ms_per_frame[frames]))
        out["ms_ratio_to_1x"][key] = ms / float(np.nanmedian(one_x[frames]))
        out["context_tokens"][key] = int(res.context_tokens[frames].max())
        if res.gathered_bytes:
            changes = slice(1, mult * n_scenes)
            out["kv_bytes_per_transition"][key] = float(np.mean(res.gathered_bytes[changes]))
            out["history_kv_bytes_per_transition"][key] = float(np.mean(res.history_bytes[changes]))
    out["ms_ratio_longest_to_1x"] = out["ms_ratio_to_1x"][str(longest)]
    return out


def _timing_prompt_sets(first_seed: int, n_videos: int, n_scenes: int) -> list[PromptSet]:
    """Held-out StoryWorld prompt sets: the cost of a frame does not depend on what the prompt says."""
    return [sample_prompt_set(first_seed + i, "heldout", n_scenes, WorldConfig().cast_size, f"timing-{first_seed + i}") for i in range(n_videos)]


def _one_x_frames(setup: BenchSetup, strategy: ContextStrategy, n_videos: int) -> Iterator[float]:
    """ms per frame of each block of successive 1x videos, NaN for their first scene's blocks."""
    for k in itertools.count():
        prompt_sets = _timing_prompt_sets(setup.seed + 20_000 + k * n_videos, n_videos, setup.scenes_per_horizon)
        for t, res in generate_stepwise(setup.gen, prompt_sets, strategy, seed=setup.seed + k, ctx=setup.ctx):
            yield float(res.ms_per_frame[t]) if t >= setup.frames_per_scene else float("nan")


def with_budget(ctx: ContextConfig, budget_k: int | None) -> ContextConfig:
    return ctx if budget_k is None else replace(ctx, budget_k=budget_k)
