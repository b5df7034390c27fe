"""Benchmark every context strategy on held-out prompt sets (or a given EPS ``.jsonl``).

    python -m inflvg.bench --split heldout --seed 0 --out results/bench.json

Writes FILE.json (schema in the README), FILE.md (table) and FILE.png (plot).
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
from ..world.story import SPLITS, Story, sample_story
from .parallel import Job, make, run_all
from .report import markdown, plot
from .run import BUDGETED, HEURISTICS, gap_closed, paired, with_budget


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
    """Where the results go: FILE.json, and FILE.md (table) and FILE.png (plot) beside it."""
    videos: int = 64
    """Prompt sets for the quality phase."""
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
    workers: int = 2
    """Processes measuring strategies side by side."""
    threads: int = 1
    """torch threads per worker."""

    def __post_init__(self) -> None:
        for name in ("videos", "timing_videos", "workers", "threads"):
            positive_int(self, name)
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


def parse_args(argv: list[str] | None) -> BenchArgs:
    return cli.parse(BenchArgs, argv, prog="python -m inflvg.bench", description=__doc__)


def bench_prompt_sets(args: BenchArgs, gen) -> tuple[list[PromptSet], list[Story | None]]:
    """The quality phase's prompt sets and, beside them, their StoryWorld ground truth (None for free text)."""
    if args.prompts:
        prompt_sets = load_prompts(args.prompts)[: args.videos]
        return prompt_sets, [ground_truth(ps) for ps in prompt_sets]
    n_scenes = gen.spec.horizon_frames // gen.spec.frames_per_scene
    stories = [sample_story(args.seed + i, args.split, n_scenes, WorldConfig().cast_size) for i in range(args.videos)]
    truths: list[Story | None] = list(stories)
    return [prompt_set_of(s, f"{args.split}-{args.seed + i}") for i, s in enumerate(stories)], truths


def strategy_names(asked: list[str] | None, prompt_sets: list[PromptSet]) -> list[str]:
    """The strategies asked for, each checked against the prompts; by default, every one they allow."""
    if asked is None:
        return [n for n in STRATEGIES if not (make_strategy(n).needs_ground_truth and any(ground_truth(ps) is None for ps in prompt_sets))]
    for name in asked:
        make_strategy(name).check(prompt_sets)
    return asked


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        gen = load_backend(args.generator, args.weights)
        prompt_sets, truths = bench_prompt_sets(args, gen)
        ctx = with_budget(gen.spec.context, args.budget_k)
        names = strategy_names(args.strategy_list, prompt_sets) + (["learned"] if args.policy else [])
        job = Job(args.generator, args.weights, args.budget_k, args.seed, prompt_sets, truths, args.length_list, args.timing_videos,
                  args.threads, args.policy)  # fmt: skip
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
            "workers": args.workers, "threads_per_worker": args.threads,
        },
        "strategies": {},
    }  # fmt: skip
    start = time.time()
    print(f"measuring {', '.join(names)} on {len(prompt_sets)} videos with {args.workers} worker(s)", file=sys.stderr)
    measured = run_all(names, job, args.workers)
    tables = {name: table for name, (table, _) in measured.items()}
    result["strategies"] = {name: entry for name, (_, entry) in measured.items()}
    result["paired"] = {f"oracle-{b}": paired(tables, "oracle", b) for b in tables if "oracle" in tables and b != "oracle"}
    if "learned" in tables:
        result["paired"].update({f"learned-{b}": paired(tables, "learned", b) for b in tables if b != "learned"})
        if "oracle" in tables and any(h in tables for h in HEURISTICS):
            result["gap_closed"] = gap_closed(tables)
        if "oracle" in tables and any(h in tables for h in BUDGETED):
            result["gap_closed_budgeted"] = gap_closed(tables, candidates=BUDGETED)
    result["per_video"] = {name: {m: [None if np.isnan(v) else round(float(v), 5) for v in t[m]] for m in t} for name, t in tables.items()}
    result["seconds"] = round(time.time() - start)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    plot(result, out.with_suffix(".png"))
    print(markdown(result))
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')} in {result['seconds']} s")
    return result


if __name__ == "__main__":
    main()
