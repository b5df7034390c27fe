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

from dataclasses import asdict, dataclass
from typing import Annotated

import numpy as np
import torch
from tqdm import tqdm

from inflvg import cli
from inflvg.config import WorldConfig
from inflvg.policy import load_policy
from inflvg.prompts import load_prompts
from inflvg.protocol import BACKENDS, load_backend
from inflvg.refine import RefineConfig, Refiner
from inflvg.validate import at_least, positive_int
from inflvg.world import sample_prompt_set
from reward_actors.videos import VideoScorer


def curves(refiner: Refiner, policy, prompt_sets: list, fresh_steps: int, amortised_steps: int) -> dict[str, np.ndarray]:
    """-> {'fresh': (P, fresh_steps + 1), 'amortised': (P, amortised_steps + 1)} reward per step."""
    out: dict[str, list] = {"fresh": [], "amortised": []}
    for i, ps in enumerate(tqdm(prompt_sets, desc="refining prompt sets", unit="set")):
        out["fresh"].append(refiner.refine(None, ps, fresh_steps + 1, seed=i).curve)
        out["amortised"].append(refiner.refine(policy, ps, amortised_steps + 1, seed=i).curve)
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


@dataclass(frozen=True)
class RefineBenchArgs:
    """The refinement benchmark's arguments (``python -m cluster.refine_bench --help``)."""

    policy: str
    """The amortised policy (policy.pt)."""
    prompt_sets: int = 6
    """Prompt sets to refine on."""
    prompts: str | None = None
    """Refine on the first prompt_sets rows of this prompt file (EPS .jsonl) instead of held-out StoryWorld."""
    generator: Annotated[str, cli.choice(BACKENDS)] = "storyworld"
    """The generator by name."""
    weights: str | None = None
    """The generator's weights; None: the backend's shipped ones."""
    seed: int = 0
    """Seed of the held-out prompt sets."""
    group_size: int = 4
    """G: sampled videos per refinement step."""
    fresh_steps: int = 20
    """Refinement steps from a fresh policy."""
    amortised_steps: int = 5
    """Refinement steps from the amortised policy."""
    out: str = "results/refine.json"
    """Where the results go: FILE.json and FILE.md (the table) beside it."""

    def __post_init__(self) -> None:
        for name in ("prompt_sets", "fresh_steps", "amortised_steps"):
            positive_int(self, name)
        at_least(self, "group_size", 2, "GRPO compares G >= 2 videos of one prompt set")
        at_least(self, "seed", 0)


def main(argv: list[str] | None = None) -> dict:
    prog = "python -m cluster.refine_bench"
    args = cli.parse(RefineBenchArgs, argv, prog=prog, description=__doc__)
    torch.set_num_threads(1)
    with cli.usage_errors(prog, FileNotFoundError, ValueError):
        policy = load_policy(args.policy)
        gen = load_backend(args.generator, args.weights)
        prompt_sets = load_prompts(args.prompts)[: args.prompt_sets] if args.prompts else [
            sample_prompt_set(50_000 + args.seed + i, "heldout", gen.spec.horizon_frames // gen.spec.frames_per_scene, WorldConfig().cast_size,
                              f"heldout-{i}")
            for i in range(args.prompt_sets)
        ]  # fmt: skip
    refiner = Refiner(gen, VideoScorer(), RefineConfig(group_size=args.group_size))
    result = summary(curves(refiner, policy, prompt_sets, args.fresh_steps, args.amortised_steps), args.fresh_steps)
    result["config"] = asdict(args)
    cli.write_results(args.out, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
