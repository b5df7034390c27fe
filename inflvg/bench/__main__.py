"""Benchmark every context strategy on held-out prompt sets (or a given EPS ``.jsonl``).

    python -m inflvg.bench --split heldout --seed 0 --out results/bench.json
    python -m inflvg.bench --split heldout --seed 0 --quality-lengths 1,4,16 --out results/long.json

Writes FILE.json (schema in docs/guide.md), FILE.md (tables), FILE.png (plot) and FILE_drift.png
(quality by scene index, a panel per quality length). Quality at Lx the horizon is measured on
stories of L times the scenes; from 4x on, with a cast of 8 whose returns are at least 5 scenes
apart (``sample_long_story``). Full history's quality is left out at 9x and beyond (its cost).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np

from .. import cli
from ..config import WorldConfig
from ..context import STRATEGIES, make_strategy
from ..prompts import PromptSet, load_prompts
from ..protocol import BACKENDS, load_backend
from ..validate import positive_int
from ..world.eps import ground_truth, prompt_set_of
from ..world.story import LONG_CAST, LONG_MIN_GAP, SPLITS, Story, sample_long_story, sample_story
from .parallel import FULL_HISTORY_UP_TO, Job, left_out, make, run_all, with_rope_scaling
from .report import markdown, plot, plot_drift
from .run import BUDGETED, HEURISTICS, gap_closed, paired, with_budget

LONG_FROM = 4
"""Quality lengths from this multiple on use ``sample_long_story`` (a cast of 8, returns >= 5 scenes apart)."""


@dataclass(frozen=True)
class BenchArgs:
    """The benchmark's arguments (``python -m inflvg.bench --help``)."""

    split: Annotated[str, cli.choice(SPLITS)] = "heldout"
    """Which StoryWorld split to sample prompt sets from."""
    prompts: str | None = None
    """A prompt file (EPS .jsonl, free text) to use instead of sampled prompt sets: its first --videos rows."""
    seed: int = 0
    """StoryWorld prompt set i is story seed + i; the generator's noise and the timing prompt sets derive from it too."""
    out: str = "results/bench.json"
    """Where the results go: FILE.json, and FILE.md (tables), FILE.png (plot) and FILE_drift.png (quality by scene) beside it."""
    videos: int | None = None
    """Prompt sets at every quality length; None: 64 at 1x, 32 at 2x-4x, 16 beyond (with --prompts: the file's first 64)."""
    quality_lengths: Annotated[tuple[int, ...], cli.comma(int, "1,4,16")] = (1,)
    """Video lengths for quality, as multiples of the training horizon (comma-separated); the top-level
    figures are the shortest one's. From --long-stories-from on, stories have a cast of 8 whose returns
    are at least 5 scenes apart; full history is left out at 9x and beyond (its cost grows with the history)."""
    long_stories_from: int = LONG_FROM
    """The shortest quality length whose stories are drawn as long ones (a cast of 8, returns at least 5
    scenes apart); shorter lengths draw the training stories' kind (a cast of 4). Set it to the
    shortest length measured to compare lengths on one kind of story."""
    strategies: Annotated[tuple[str, ...], cli.comma(str, "full,window,oracle")] | None = None
    """Comma-separated strategy names; None: every strategy the prompts allow ('oracle' needs
    StoryWorld's ground truth, which free text has not)."""
    budget_k: int | None = None
    """Long-term tokens kept; None: the weights' own."""
    lengths: Annotated[tuple[int, ...], cli.comma(int, "1,2,4")] = (1, 2, 4, 8, 16)
    """Video lengths for timing, as multiples of the training horizon (comma-separated)."""
    timing_videos: int = 1
    """Videos of the longest length timed per strategy (each shorter length is their prefix)."""
    generator: Annotated[str, cli.choice(BACKENDS)] = "storyworld"
    """The generator by name."""
    weights: str | None = None
    """Generator weights; None: the backend's shipped ones."""
    policy: str | None = None
    """A trained selection policy (policy.pt): adds the 'learned' strategy (greedy top-K)."""
    rope_scaling: Annotated[str, cli.choice(("flex", "none"))] | None = None
    """FLEX frequency-aware temporal RoPE on ('flex') or off ('none') for the whole run (the FLEX ablation;
    storyworld backend); None: the weights' own setting."""
    workers: int = 2
    """Processes measuring strategies side by side."""
    threads: int = 1
    """torch threads per worker."""

    def __post_init__(self) -> None:
        for name in ("timing_videos", "workers", "threads", "long_stories_from"):
            positive_int(self, name)
        if self.videos is not None:
            positive_int(self, "videos", "or None for the default of each length")
        if not self.quality_lengths or min(self.quality_lengths) < 1:
            raise ValueError(f"BenchArgs.quality_lengths must be positive integers, got {self.quality_lengths!r}; e.g. --quality-lengths 1,4")
        if self.prompts and self.quality_lengths != (1,):
            raise ValueError("BenchArgs.quality_lengths must be 1 with --prompts: the file's prompt sets have the lengths they have")
        if self.budget_k is not None:
            positive_int(self, "budget_k", "or None for the weights' own budget")
        if not self.lengths or min(self.lengths) < 1:
            raise ValueError(f"BenchArgs.lengths must be positive integers, got {self.lengths!r}; e.g. --lengths 1,2,4")
        for name in self.strategies or ():
            make_strategy(name)

    @property
    def strategy_list(self) -> list[str] | None:
        return list(self.strategies) if self.strategies else None

    @property
    def length_list(self) -> list[int]:
        return sorted(set(self.lengths))

    @property
    def quality_list(self) -> list[int]:
        return sorted(set(self.quality_lengths))

    def videos_at(self, length: int) -> int:
        return self.videos or (64 if length == 1 else 32 if length <= LONG_FROM else 16)


def parse_args(argv: list[str] | None) -> BenchArgs:
    return cli.parse(BenchArgs, argv, prog="python -m inflvg.bench", description=__doc__)


def bench_prompt_sets(args: BenchArgs, gen) -> dict[int, tuple[list[PromptSet], list[Story | None]]]:
    """Per quality length, its prompt sets and, beside them, their StoryWorld ground truth (None for
    free text). Prompt set i of every length is story seed + i (at 1x as it always was)."""
    if args.prompts:
        prompt_sets = load_prompts(args.prompts)[: args.videos_at(1)]
        return {1: (prompt_sets, [ground_truth(ps) for ps in prompt_sets])}
    out: dict[int, tuple[list[PromptSet], list[Story | None]]] = {}
    for L in args.quality_list:
        n_scenes, seeds = L * gen.spec.horizon_frames // gen.spec.frames_per_scene, range(args.seed, args.seed + args.videos_at(L))
        if args.long_stories_from <= L:
            stories = [sample_long_story(s, args.split, n_scenes) for s in seeds]
        else:
            stories = [sample_story(s, args.split, n_scenes, WorldConfig().cast_size) for s in seeds]
        suffix = "" if L == 1 else f"-{L}x"
        out[L] = ([prompt_set_of(st, f"{args.split}-{s}{suffix}") for s, st in zip(seeds, stories, strict=True)], list(stories))
    return out


def pairs_at(tables: dict[str, dict[str, np.ndarray]]) -> dict:
    """Paired differences at one length: oracle, and the learned policy, against every other strategy measured there."""
    return {f"{a}-{b}": paired(tables, a, b) for a in ("oracle", "learned") if a in tables for b in tables if b != a}


def strategy_names(asked: list[str] | None, prompt_sets: list[PromptSet], lengths: list[int]) -> list[str]:
    """The strategies asked for, each checked against the prompts; by default, every one they allow
    and that is measured at some quality length (``left_out``)."""
    if asked is None:
        return [n for n in STRATEGIES if not (make_strategy(n).needs_ground_truth and any(ground_truth(ps) is None for ps in prompt_sets))
                and not all(left_out(n, L) for L in lengths)]  # fmt: skip
    for name in asked:
        make_strategy(name).check(prompt_sets)
        if all(left_out(name, L) for L in lengths):
            raise ValueError(f"'{name}' is left out of quality beyond {FULL_HISTORY_UP_TO}x (its cost); add a shorter --quality-lengths")
    return asked


def load_generator(args: BenchArgs):
    """The backend, with --rope-scaling applied (a backend without it fails here, before any work)."""
    gen = load_backend(args.generator, args.weights)
    if args.rope_scaling is not None:
        with_rope_scaling(gen, args.rope_scaling)
    return gen


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        gen = load_generator(args)
        quality = bench_prompt_sets(args, gen)
        lengths = sorted(quality)
        prompt_sets, truths = quality[lengths[0]]
        ctx = with_budget(gen.spec.context, args.budget_k)
        names = strategy_names(args.strategy_list, [ps for L in lengths for ps in quality[L][0]], lengths) + (["learned"] if args.policy else [])
        job = Job(args.generator, args.weights, args.budget_k, args.seed, quality, args.length_list,
                  gen.spec.horizon_frames // gen.spec.frames_per_scene, args.timing_videos, args.threads, args.policy, args.rope_scaling)  # fmt: skip
        if args.policy:
            make("learned", job, gen)  # a missing or wrong policy file fails here, before any work
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    result = {
        "config": {
            "split": None if args.prompts else args.split, "prompts": args.prompts or f"{args.split} split",
            "ground_truth": sum(t is not None for t in truths) / len(truths), "generator": args.generator,
            "seed": args.seed, "videos": len(prompt_sets), "frames_per_scene": gen.spec.frames_per_scene,
            "horizon_frames": gen.spec.horizon_frames, "budget_k": ctx.budget_k, "window_frames": ctx.window_frames,
            "length_multiples": args.length_list, "weights": args.weights or "shipped", "policy": args.policy,
            "workers": args.workers, "threads_per_worker": args.threads, "quality_lengths": lengths,
            "rope_scaling": args.rope_scaling,
            "videos_by_length": {str(L): len(quality[L][0]) for L in lengths},
            "scenes_by_length": {str(L): quality[L][0][0].n_scenes for L in lengths},
            "long_stories": {"from": args.long_stories_from, "cast": LONG_CAST, "min_gap": LONG_MIN_GAP},
            "quality_left_out": {str(L): [n for n in names if left_out(n, L)] for L in lengths if any(left_out(n, L) for n in names)},
        },
        "strategies": {},
    }  # fmt: skip
    start = time.time()
    videos = ", ".join(f"{len(quality[L][0])} at {L}x" for L in lengths)
    print(f"measuring {', '.join(names)} on {videos} with {args.workers} worker(s)", file=sys.stderr)
    measured = run_all(names, job, args.workers)
    tables = {name: by_length[lengths[0]] for name, (by_length, _) in measured.items()}
    result["strategies"] = {name: entry for name, (_, entry) in measured.items()}
    result["paired"] = pairs_at(tables)
    if "learned" in tables:
        if "oracle" in tables and any(h in tables for h in HEURISTICS):
            result["gap_closed"] = gap_closed(tables)
        if "oracle" in tables and any(h in tables for h in BUDGETED):
            result["gap_closed_budgeted"] = gap_closed(tables, candidates=BUDGETED)
    result["paired_by_length"] = {str(L): pairs_at({n: t[L] for n, (t, _) in measured.items() if L in t}) for L in lengths}
    result["per_video"] = {name: {m: [None if np.isnan(v) else round(float(v), 5) for v in t[m]] for m in t} for name, t in tables.items()}
    result["seconds"] = round(time.time() - start)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    plot(result, out.with_suffix(".png"))
    drift_png = out.with_name(f"{out.stem}_drift.png")
    plot_drift(result, drift_png)
    print(markdown(result))
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}, {drift_png} in {result['seconds']} s")
    return result


if __name__ == "__main__":
    main()
