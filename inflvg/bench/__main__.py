"""Benchmark every context strategy on held-out prompt sets (or a given EPS ``.jsonl``).

    python -m inflvg.bench --split heldout --seed 0 --out results/bench.json

Writes FILE.json (schema in the README), FILE.md (table) and FILE.png (plot).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..context import STRATEGIES, make_strategy
from ..generator.weights import load_generator
from ..world.eps import load_eps
from ..world.story import SPLITS, sample_story
from .parallel import Job, make, run_all
from .report import markdown, plot
from .run import BUDGETED, HEURISTICS, gap_closed, paired, with_budget


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m inflvg.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=SPLITS, default="heldout", help="which StoryWorld split to sample prompt sets from")
    ap.add_argument("--prompts", help="an EPS .jsonl to use instead of sampled prompt sets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/bench.json")
    ap.add_argument("--videos", type=positive_int, default=64, help="prompt sets for the quality phase")
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated names")
    ap.add_argument("--budget-k", type=positive_int, help="long-term tokens kept (default: the weights' own)")
    ap.add_argument("--lengths", default="1,2,4,8,16", help="video lengths for timing, as multiples of the training horizon")
    ap.add_argument("--timing-videos", type=positive_int, default=1)
    ap.add_argument("--weights", help="generator weights (default: the shipped ones)")
    ap.add_argument("--policy", help="a trained selection policy (policy.pt): adds the 'learned' strategy (greedy top-K)")
    ap.add_argument("--workers", type=positive_int, default=2, help="processes measuring strategies side by side")
    ap.add_argument("--threads", type=positive_int, default=1, help="torch threads per worker")
    args = ap.parse_args(argv)
    args.strategy_list = [s for s in args.strategies.split(",") if s]
    try:
        for name in args.strategy_list:
            make_strategy(name)
        args.length_list = sorted({positive_int(x) for x in args.lengths.split(",")})
    except (ValueError, argparse.ArgumentTypeError) as e:
        ap.error(str(e))
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        model, world, ctx, _ = load_generator(args.weights)
        stories = load_eps(args.prompts, args.seed) if args.prompts else [
            sample_story(args.seed + i, args.split, world.n_scenes, world.cast_size) for i in range(args.videos)
        ]
        ctx = with_budget(ctx, args.budget_k)
        names = args.strategy_list + (["learned"] if args.policy else [])
        job = Job(args.weights, args.budget_k, args.seed, stories, args.length_list, args.timing_videos, args.threads, args.policy)
        if args.policy:
            make("learned", job, model)  # a missing or wrong policy file fails here, before any work
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    result = {
        "config": {
            "split": None if args.prompts else args.split, "prompts": args.prompts or f"{args.split} split",
            "seed": args.seed, "videos": len(stories), "frames_per_scene": world.frames_per_scene,
            "horizon_frames": model.cfg.horizon_frames, "budget_k": ctx.budget_k, "window_frames": ctx.window_frames,
            "length_multiples": args.length_list, "weights": args.weights or "shipped", "policy": args.policy,
            "workers": args.workers, "threads_per_worker": args.threads,
        },
        "strategies": {},
    }  # fmt: skip
    start = time.time()
    print(f"measuring {', '.join(names)} on {len(stories)} videos with {args.workers} worker(s)", file=sys.stderr)
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
