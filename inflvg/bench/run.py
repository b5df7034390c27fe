"""The benchmark's two phases: quality on a prompt set, and cost by video length."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace

import numpy as np

from ..config import ContextConfig, WorldConfig
from ..context.base import ContextStrategy
from ..generator.model import Generator
from ..generator.sample import generate
from ..world.story import Story, sample_story
from .quality import METRICS, mean_ci, per_video_table, score_video


@dataclass(frozen=True)
class BenchSetup:
    model: Generator
    world: WorldConfig
    ctx: ContextConfig
    seed: int
    batch: int = 16


class Progress:
    """One status line on stderr: rewritten in place on a terminal, a line per quarter otherwise
    (always the latter where several processes share the terminal: ``Progress.inline = False``)."""

    inline = True

    def __init__(self, label: str):
        self.label, self.start, self.tty = label, time.time(), self.inline and sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        line = f"  {self.label}: {done}/{total} frames  {time.time() - self.start:5.0f}s"
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if done == total else ""))
        elif done == total or done % max(1, total // 4) == 0:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def run_quality(setup: BenchSetup, strategy: ContextStrategy, stories: list[Story]) -> dict[str, np.ndarray]:
    """Per-video metric arrays of one strategy; batches keep their seed so strategies are paired."""
    scores = []
    by_length: dict[int, list[int]] = {}
    for i, s in enumerate(stories):
        by_length.setdefault(len(s.scenes), []).append(i)
    order = [i for idx in by_length.values() for i in idx]
    for start in range(0, len(order), setup.batch):
        idx = order[start : start + setup.batch]
        batch = [stories[i] for i in idx]
        res = generate(setup.model, batch, setup.world, setup.ctx, strategy, seed=setup.seed + start,
                       progress=Progress(f"{strategy.name} videos {start + 1}-{start + len(idx)}/{len(order)}"))
        scores += [(i, score_video(s, f, setup.world.frames_per_scene)) for i, s, f in zip(idx, batch, res.frames)]
    scores.sort(key=lambda x: x[0])
    return per_video_table([s for _, s in scores])


def summarize(table: dict[str, np.ndarray]) -> dict:
    out = {}
    for m in METRICS:
        mean, lo, hi = mean_ci(table[m])
        out[m] = mean
        out.setdefault("ci95", {})[m] = [lo, hi]
    return out


def paired(tables: dict[str, dict[str, np.ndarray]], a: str, b: str) -> dict:
    """Mean per-video difference a - b with its 95% interval, for every metric."""
    out = {}
    for m in METRICS:
        mean, lo, hi = mean_ci(tables[a][m] - tables[b][m])
        out[m] = {"mean": mean, "ci95": [lo, hi]}
    return out


HEURISTICS = ("full", "window", "sink_window", "far", "random", "prompt_match")
BUDGETED = HEURISTICS[1:]  # the heuristics that keep the same fixed budget as the policy


def gap_closed(tables: dict[str, dict[str, np.ndarray]], metric: str = "combined", n_boot: int = 2000, seed: int = 0,
               candidates: tuple[str, ...] = HEURISTICS) -> dict:  # fmt: skip
    """How much of the gap between the best heuristic and oracle-K the learned policy closes:
    (learned - best) / (oracle - best) on ``metric``, with a 95% bootstrap interval over videos
    (resampled jointly, so the three stay paired). The best of ``candidates`` is chosen on the means."""
    heuristics = [h for h in candidates if h in tables]
    best = max(heuristics, key=lambda h: np.nanmean(tables[h][metric]))
    l, h, o = (tables[n][metric] for n in ("learned", best, "oracle"))
    keep = ~(np.isnan(l) | np.isnan(h) | np.isnan(o))
    l, h, o = l[keep], h[keep], o[keep]
    if o.mean() <= h.mean():  # oracle-K no better than the heuristic: there is no gap to close
        return {"best_heuristic": best, "metric": metric, "fraction": float("nan"), "ci95": [float("nan"), float("nan")]}
    idx = np.random.default_rng(seed).integers(0, len(l), (n_boot, len(l)))
    boots = (l[idx].mean(1) - h[idx].mean(1)) / (o[idx].mean(1) - h[idx].mean(1))
    value = (l.mean() - h.mean()) / (o.mean() - h.mean())
    return {"best_heuristic": best, "metric": metric, "fraction": float(value), "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]}


def run_timing(setup: BenchSetup, strategy: ContextStrategy, multiples: list[int], n_videos: int = 2) -> dict:
    """ms per frame, context tokens and KV bytes per scene change, at each multiple of the horizon."""
    out = {"ms_per_frame": {}, "context_tokens": {}, "kv_bytes_per_transition": {}, "history_kv_bytes_per_transition": {}}
    for mult in multiples:
        n_scenes = setup.world.n_scenes * mult
        stories = [sample_story(setup.seed + 10_000 + i, "heldout", n_scenes, setup.world.cast_size) for i in range(n_videos)]
        res = generate(setup.model, stories, setup.world, setup.ctx, strategy, seed=setup.seed,
                       progress=Progress(f"{strategy.name} timing {mult}x ({n_scenes * setup.world.frames_per_scene} frames)"))
        key = str(mult)
        out["ms_per_frame"][key] = float(np.median(res.ms_per_frame[setup.world.frames_per_scene :]))
        out["context_tokens"][key] = int(res.context_tokens.max())
        if res.gathered_bytes:
            out["kv_bytes_per_transition"][key] = float(np.mean(res.gathered_bytes[1:] or res.gathered_bytes))
            out["history_kv_bytes_per_transition"][key] = float(np.mean(res.history_bytes[1:] or res.history_bytes))
    lo, hi = str(min(multiples)), str(max(multiples))
    out["ms_ratio_longest_to_1x"] = out["ms_per_frame"][hi] / out["ms_per_frame"][lo]
    return out


def with_budget(ctx: ContextConfig, budget_k: int | None) -> ContextConfig:
    return ctx if budget_k is None else replace(ctx, budget_k=budget_k)
