"""Fit the artifact score's calibration on StoryWorld renders and report held-out AUCs.

    python -m reward_actors.fit_artifacts --out reward_actors/weights/artifacts_calibration.json

Clean: renders and their generator-like imitations ("degrade", "rough"); artifacts: renders with
noise, blocks, blur + colour shift, salt and pepper (inflvg.world.readers.corrupt), applied to
every frame of a scene. Fitted on the training split, evaluated on the held-out split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inflvg import cli
from inflvg.config import WorldConfig
from inflvg.validate import at_least
from inflvg.world.readers import CORRUPTIONS, IMITATIONS, corrupt
from inflvg.world.story import render_story, sample_story

from .artifacts import DEFAULT_CALIBRATION, FEATURES, _design, fit_logistic, scene_features


def labelled_scenes(split: str, n_videos: int, seed: int):
    """-> features (N, 6), clean (N,) bool, kind (N,) str."""
    world = WorldConfig()
    rng = np.random.default_rng(seed)
    feats, clean, kinds = [], [], []
    for i in range(n_videos):
        video = render_story(sample_story(seed + i, split, world.n_scenes, world.cast_size), world)
        for sc in range(world.n_scenes):
            frames = video.frames[sc * world.frames_per_scene : (sc + 1) * world.frames_per_scene]
            for kind in ("none", *IMITATIONS, *CORRUPTIONS):
                x = frames if kind == "none" else np.stack([corrupt(f, kind, rng) for f in frames])
                feats.append(scene_features(x))
                clean.append(kind not in CORRUPTIONS)
                kinds.append(kind)
    return np.stack(feats), np.array(clean), np.array(kinds)


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half."""
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


@dataclass(frozen=True)
class FitArgs:
    """The artifact calibration fit's arguments (``python -m reward_actors.fit_artifacts --help``)."""

    videos: int = 40
    """Training-split videos to fit on (half as many held-out videos are evaluated)."""
    seed: int = 0
    """Story seeds are seed, seed + 1, ... (held out: seed + 100000, ...); also seeds the corruptions."""
    out: str = str(DEFAULT_CALIBRATION)
    """Where the calibration JSON goes (the shipped one by default)."""

    def __post_init__(self) -> None:
        at_least(self, "videos", 2, "half as many held-out videos are evaluated, so at least 2")


def main(argv: list[str] | None = None) -> dict:
    args = cli.parse(FitArgs, argv, prog="python -m reward_actors.fit_artifacts", description=__doc__)
    x, y, _ = labelled_scenes("train", args.videos, args.seed)
    w = fit_logistic(x, y)
    hx, _, hk = labelled_scenes("heldout", args.videos // 2, args.seed + 100_000)
    p = 1.0 / (1.0 + np.exp(-_design(hx) @ w))
    report: dict[str, float | dict[str, float]] = {k: auc(p[hk == "none"], p[hk == k]) for k in CORRUPTIONS}
    report.update({f"clean_vs_{k}": auc(p[hk == "none"], p[hk == k]) for k in IMITATIONS})
    report["mean_p_clean"] = {k: float(p[hk == k].mean()) for k in ("none", *IMITATIONS, *CORRUPTIONS)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"weights": w.tolist(), "features": list(FEATURES), "heldout_auc": report}, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
