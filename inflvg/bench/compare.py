"""Paired comparison of one strategy across two benchmark runs, e.g. two trained policies, or two
generator weights (``--weights``) under the same strategy:

    python -m inflvg.bench.compare A.json B.json --strategy learned --out F.json

Both runs must have measured the same prompt sets with the same noise (the same split, seed, prompt
file, video count, generator backend and budget); the difference A - B is then taken video by video, with
a 95% bootstrap interval over prompt sets (``quality.bootstrap_ci``), for every metric, at the
runs' shortest quality length (``per_video``). Prints a table and writes F.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from .. import cli
from .quality import METRICS, bootstrap_ci

PAIRED_ON = ("split", "prompts", "seed", "videos", "generator", "frames_per_scene", "budget_k", "window_frames")
"""Config keys two runs must share for their videos to be the same prompt sets and noise (the
weights may differ: the prompt sets and the noise do not depend on them)."""
RENAMED = {"generator": "backend"}
"""Keys that results written by earlier versions name otherwise."""


def _setting(config: dict, key: str):
    return config.get(key, config.get(RENAMED.get(key, key)))


@dataclass(frozen=True)
class CompareArgs:
    a: tyro.conf.Positional[str]
    """The first benchmark JSON (``python -m inflvg.bench ... --out A.json``)."""
    b: tyro.conf.Positional[str]
    """The second, measured on the same prompt sets and noise."""
    strategy: str = "learned"
    """The strategy compared (its ``per_video`` entry in both runs)."""
    out: str | None = None
    """Where to write the JSON; None: print only."""


def paired_difference(a: dict, b: dict, strategy: str) -> dict:
    """Two benchmark results -> {METRIC: {a, b, mean, ci95}}: means and the paired difference a - b."""
    settings = {k: (_setting(a["config"], k), _setting(b["config"], k)) for k in PAIRED_ON}
    differ = {k: pair for k, pair in settings.items() if pair[0] != pair[1]}
    if differ:
        raise ValueError(f"the two runs did not measure the same videos: config {differ} differ; rerun one with the other's flags")
    for name, run in (("A", a), ("B", b)):
        if strategy not in run["per_video"]:
            raise ValueError(f"run {name} has no strategy {strategy!r} (it has {', '.join(run['per_video'])}); pass --strategy")
    out = {}
    for m in (m for m in METRICS if all(m in r["per_video"][strategy] for r in (a, b))):  # results older than a metric lack it
        va, vb = (np.array(r["per_video"][strategy][m], dtype=float) for r in (a, b))
        keep = ~(np.isnan(va) | np.isnan(vb))
        d = va[keep] - vb[keep]
        out[m] = {"a": float(va[keep].mean()), "b": float(vb[keep].mean()), "mean": float(d.mean()), "ci95": bootstrap_ci((d,), np.mean)}
    return out


def main(argv: list[str] | None = None) -> dict:
    prog = "python -m inflvg.bench.compare"
    args = cli.parse(CompareArgs, argv, prog=prog, description=__doc__)
    with cli.usage_errors(prog, ValueError, OSError):
        a, b = (json.loads(Path(p).read_text()) for p in (args.a, args.b))
        difference = paired_difference(a, b, args.strategy)
    weights = [r["config"].get("weights", "shipped") for r in (a, b)]
    result = {"a": args.a, "b": args.b, "strategy": args.strategy, "videos": a["config"].get("videos"), "weights": weights,
              "difference": difference}  # fmt: skip
    print(f"{args.strategy}: A = {args.a} (weights {weights[0]}), B = {args.b} (weights {weights[1]}), {result['videos']} paired videos\n")
    print("| metric | A | B | A - B [95%] |\n|---|---|---|---|")
    for m, d in result["difference"].items():
        print(f"| {m} | {d['a']:.3f} | {d['b']:.3f} | {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] |")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
