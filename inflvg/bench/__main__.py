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
import torch

from ..context import STRATEGIES, make_strategy
from ..generator.weights import load_generator
from ..world.eps import load_eps
from ..world.story import SPLITS, sample_story
from .report import markdown, plot
from .run import BUDGETED, HEURISTICS, BenchSetup, gap_closed, paired, run_quality, run_timing, summarize, with_budget


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
    ap.add_argument("--threads", type=positive_int, default=2)
    args = ap.parse_args(argv)
    args.strategy_list = [s for s in args.strategies.split(",") if s]
    try:
        for name in args.strategy_list:
            make_strategy(name)
        args.length_list = sorted({positive_int(x) for x in args.lengths.split(",")})
    except (ValueError, argparse.ArgumentTypeError) as e:
        ap.error(str(e))
    return args


def learned_strategy(path: str, model):
    from ..policy import LearnedStrategy, generator_prompt_embedder, load_policy

    return LearnedStrategy(load_policy(path), generator_prompt_embedder(model), greedy=True, record=False)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        model, world, ctx, _ = load_generator(args.weights)
        stories = load_eps(args.prompts, args.seed) if args.prompts else [
            sample_story(args.seed + i, args.split, world.n_scenes, world.cast_size) for i in range(args.videos)
        ]
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    ctx = with_budget(ctx, args.budget_k)
    setup = BenchSetup(model, world, ctx, args.seed)
    result = {
        "config": {
            "split": None if args.prompts else args.split, "prompts": args.prompts or f"{args.split} split",
            "seed": args.seed, "videos": len(stories), "frames_per_scene": world.frames_per_scene,
            "horizon_frames": model.cfg.horizon_frames, "budget_k": ctx.budget_k, "window_frames": ctx.window_frames,
            "length_multiples": args.length_list, "weights": args.weights or "shipped", "policy": args.policy,
        },
        "strategies": {},
    }  # fmt: skip
    try:
        strategies = {name: make_strategy(name) for name in args.strategy_list}
        if args.policy:
            strategies["learned"] = learned_strategy(args.policy, model)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    tables, start = {}, time.time()
    for name, strategy in strategies.items():
        print(f"[{time.time() - start:5.0f}s] {name}: quality on {len(stories)} videos", file=sys.stderr)
        tables[name] = run_quality(setup, strategy, stories)
        entry = summarize(tables[name])
        print(f"[{time.time() - start:5.0f}s] {name}: timing at {args.length_list}x", file=sys.stderr)
        entry["timing"] = run_timing(setup, strategy, args.length_list, args.timing_videos)
        result["strategies"][name] = entry
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
