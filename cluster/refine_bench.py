"""Test-time refinement from the amortised policy against a fresh policy, on held-out prompt sets.

    python -m cluster.refine_bench --policy runs/storyworld/policy.pt --prompt-sets 6 --out results/refine.json
    python -m cluster.refine_bench --policy runs/storyworld/policy.pt --prompts my_prompts.jsonl   # the file's first rows

For each held-out prompt set, both starts are refined with the same noise and reward models;
the curve entry at step i is the mean combined reward of the G videos sampled after i updates.
Prints the two curves (mean over prompt sets) and the first step at which the amortised start
reaches what the fresh policy reaches after ``--fresh-steps`` updates, and writes them to JSON
and markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from inflvg.config import WorldConfig
from inflvg.policy import load_policy
from inflvg.prompts import load_prompts
from inflvg.protocol import BACKENDS, load_backend
from inflvg.refine import RefineConfig, Refiner
from inflvg.world import sample_prompt_set
from reward_actors.videos import VideoScorer



def curves(refiner: Refiner, policy, prompt_sets: list, fresh_steps: int, amortised_steps: int) -> dict[str, np.ndarray]:
    """-> {'fresh': (P, fresh_steps + 1), 'amortised': (P, amortised_steps + 1)} reward per step."""
    out: dict[str, list] = {"fresh": [], "amortised": []}
    start = time.time()
    for i, ps in enumerate(prompt_sets):
        out["fresh"].append(refiner.refine(None, ps, fresh_steps + 1, seed=i).curve)
        out["amortised"].append(refiner.refine(policy, ps, amortised_steps + 1, seed=i).curve)
        print(f"[{time.time() - start:5.0f}s] prompt set {i + 1}/{len(prompt_sets)}", file=sys.stderr, flush=True)
    return {k: np.array(v) for k, v in out.items()}


def summary(c: dict[str, np.ndarray], fresh_steps: int) -> dict:
    fresh, amortised = c["fresh"].mean(0), c["amortised"].mean(0)
    target = float(fresh[fresh_steps])
    reached = [i for i, r in enumerate(amortised) if r >= target]
    return {
        "fresh_curve": fresh.round(4).tolist(), "amortised_curve": amortised.round(4).tolist(),
        "fresh_reward_after_steps": target, "fresh_steps": fresh_steps,
        "amortised_steps_to_reach": reached[0] if reached else None,
    }  # fmt: skip


def markdown(s: dict) -> str:
    n = max(len(s["fresh_curve"]), len(s["amortised_curve"]))
    rows = ["| step | fresh | amortised |", "|---|---|---|"]
    for i in range(n):
        f = f"{s['fresh_curve'][i]:.4f}" if i < len(s["fresh_curve"]) else ""
        a = f"{s['amortised_curve'][i]:.4f}" if i < len(s["amortised_curve"]) else ""
        rows.append(f"| {i} | {f} | {a} |")
    reach = s["amortised_steps_to_reach"]
    rows += ["", f"Fresh policy after {s['fresh_steps']} steps: {s['fresh_reward_after_steps']:.4f}; amortised start reaches it "
             + (f"after {reach} steps." if reach is not None else "within none of its steps.")]  # fmt: skip
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m cluster.refine_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="the amortised policy (policy.pt)")
    ap.add_argument("--prompt-sets", type=int, default=6)
    ap.add_argument("--prompts", help="refine on the first --prompt-sets rows of this prompt file (EPS .jsonl) instead of held-out StoryWorld")
    ap.add_argument("--generator", default="storyworld", choices=list(BACKENDS), help="the generator by name")
    ap.add_argument("--weights", help="generator weights (default: the backend's shipped ones)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--fresh-steps", type=int, default=20)
    ap.add_argument("--amortised-steps", type=int, default=5)
    ap.add_argument("--out", default="results/refine.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        policy = load_policy(args.policy)
        gen = load_backend(args.generator, args.weights)
        prompt_sets = load_prompts(args.prompts)[: args.prompt_sets] if args.prompts else [
            sample_prompt_set(50_000 + args.seed + i, "heldout", gen.spec.horizon_frames // gen.spec.frames_per_scene, WorldConfig().cast_size,
                              f"heldout-{i}")
            for i in range(args.prompt_sets)
        ]  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    refiner = Refiner(gen, VideoScorer(), RefineConfig(group_size=args.group_size))
    result = summary(curves(refiner, policy, prompt_sets, args.fresh_steps, args.amortised_steps), args.fresh_steps)
    result["config"] = vars(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
