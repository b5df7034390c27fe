"""Training curves of runs against the frames they generated, from their ``steps.jsonl``:

    python -m cluster.curves runs/storyworld runs/storyworld-tree --metric reward_identity_mean --out F.png

Each run's metric is smoothed by a trailing mean over ``--window`` steps and drawn against the
cumulative ``frames_generated``; the table says, for every run, the frames at which its smoothed
curve first reaches the first run's final smoothed value (``-`` if never), so two rollout modes
can be compared at equal generation cost. Writes F.png and F.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from inflvg import cli


@dataclass(frozen=True)
class CurveArgs:
    runs: tyro.conf.Positional[tuple[str, ...]]
    """Run folders (``<output_root>/<run_name>``), each with its steps.jsonl; the first is the reference."""
    metric: str = "reward_identity_mean"
    """A key of steps.jsonl (reward, reward_<family>_mean, ...)."""
    window: int = 10
    """Steps in the trailing mean."""
    out: str = "results/curves.png"
    """Where the PNG goes; the JSON goes beside it."""


def read_curve(run: Path, metric: str, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative frames generated, the metric's trailing mean) of a run, step by step."""
    path = run / "steps.jsonl"
    if not path.is_file():
        raise ValueError(f"no steps.jsonl in {run}: pass a run folder (<output_root>/<run_name>)")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    missing = [r["step"] for r in rows if metric not in r or "frames_generated" not in r]
    if missing:
        raise ValueError(f"{path} lacks {metric!r} or frames_generated at steps {missing[:5]} (a run from before they were logged?)")
    values = np.array([r[metric] for r in rows], float)
    smooth = np.array([np.nanmean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))])
    return np.cumsum([r["frames_generated"] for r in rows]), smooth


def frames_to_reach(frames: np.ndarray, curve: np.ndarray, target: float) -> int | None:
    """The frames generated when ``curve`` first reaches ``target``; None if it never does."""
    hit = np.flatnonzero(curve >= target)
    return int(frames[hit[0]]) if len(hit) else None


def main(argv: list[str] | None = None) -> dict:
    prog = "python -m cluster.curves"
    args = cli.parse(CurveArgs, argv, prog=prog, description=__doc__)
    with cli.usage_errors(prog):
        curves = {run: read_curve(Path(run), args.metric, args.window) for run in args.runs}
    target = float(curves[args.runs[0]][1][-1])
    result = {"metric": args.metric, "window": args.window, "target": target, "runs": {
        run: {"steps": len(c), "frames": int(f[-1]), "final": float(c[-1]), "frames_to_target": frames_to_reach(f, c, target)}
        for run, (f, c) in curves.items()}}  # fmt: skip
    print(f"{args.metric}, trailing mean of {args.window} steps; target: {args.runs[0]}'s final {target:.3f}\n")
    print("| run | steps | frames | final | frames to reach the target |\n|---|---|---|---|---|")
    for run, r in result["runs"].items():
        print(f"| {run} | {r['steps']} | {r['frames']:,} | {r['final']:.3f} | {r['frames_to_target'] or '-'} |")
    plot(curves, args.metric, Path(args.out))
    Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=1))
    return result


def plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run, (frames, curve) in curves.items():
        ax.plot(frames, curve, label=Path(run).name)
    ax.set_xlabel("frames generated")
    ax.set_ylabel(metric)
    ax.legend()
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
