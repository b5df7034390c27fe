"""How well the world readers read StoryWorld: ``python -m inflvg.world.readers_check``.

Renders held-out videos, reads every frame and every scene of the clean renders, of a mildly
degraded copy (blur 0.7 + noise 8, like a generator's imitation) and of a rough copy (colours off
by up to 30 levels, blur 1.0, noise 12, stray pixels; see ``readers.corrupt``), and reports the accuracy of the
background, of each subject attribute and of ``which_character``, and the ROC-AUC with which
``artifact_score`` tells clean (or degraded) frames from corrupted ones. Prints a markdown
table and writes JSON.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import cli
from ..config import WorldConfig
from ..validate import positive_int
from .readers import CORRUPTIONS, artifact_score, corrupt, read_background, read_scene, read_subject, which_character
from .story import Story, Video, render_story, sample_story

ATTRIBUTES = ("shape", "colour1", "colour2", "pattern", "size")
VARIANTS = ("clean", "degraded", "rough")
TARGETS = {  # (variant, metric) -> minimum accuracy
    ("clean", "frame/background"): 0.97,
    ("clean", "frame/character"): 0.97,
    **{("clean", f"frame/{a}"): 0.9 for a in ATTRIBUTES},
    ("degraded", "scene/background"): 0.9,
    ("degraded", "scene/character"): 0.9,
}


def roc_auc(negatives: list[float], positives: list[float]) -> float:
    """P(score of a positive > score of a negative), ties counting one half."""
    neg, pos = np.asarray(negatives, float), np.asarray(positives, float)
    greater = (pos[:, None] > neg[None]).mean()
    ties = (pos[:, None] == neg[None]).mean()
    return float(greater + 0.5 * ties)


def _frame_hits(story: Story, video: Video, frames: np.ndarray) -> dict[str, list[bool]]:
    """Per-frame correctness of background, subject found, each attribute and the character."""
    hits: dict[str, list[bool]] = {k: [] for k in ("background", "subject", *ATTRIBUTES, "character")}
    for t, frame in enumerate(frames):
        truth = story.cast[video.character[t]]
        bg = read_background(frame)
        reading = read_subject(frame, bg)
        hits["background"].append(bg == video.background[t])
        hits["subject"].append(reading is not None)
        for a, want in zip(ATTRIBUTES, truth.attributes(), strict=True):
            hits[a].append(reading is not None and getattr(reading, a) == want)
        hits["character"].append(which_character(reading, story.cast) == video.character[t])
    return hits


def _scene_hits(story: Story, video: Video, frames: np.ndarray, fps: int) -> dict[str, list[bool]]:
    """Per-scene correctness of the majority readings."""
    hits: dict[str, list[bool]] = {k: [] for k in ("background", "subject", *ATTRIBUTES, "character")}
    for i, scene in enumerate(story.scenes):
        reading = read_scene(frames[i * fps : (i + 1) * fps])
        truth = story.cast[scene.character]
        hits["background"].append(reading.background == video.background[i * fps])
        hits["subject"].append(reading.subject is not None)
        for a, want in zip(ATTRIBUTES, truth.attributes(), strict=True):
            hits[a].append(reading.subject is not None and getattr(reading.subject, a) == want)
        hits["character"].append(which_character(reading.subject, story.cast) == scene.character)
    return hits


def _artifact_scores(frames: np.ndarray, backgrounds: np.ndarray, rng: np.random.Generator) -> dict[str, list[float]]:
    """artifact_score of each frame as given and after each corruption."""
    out: dict[str, list[float]] = {k: [] for k in ("none", *CORRUPTIONS)}
    for frame, bg in zip(frames, backgrounds, strict=True):
        out["none"].append(artifact_score(frame, int(bg)))
        for kind in CORRUPTIONS:
            bad = corrupt(frame, kind, rng)
            out[kind].append(artifact_score(bad, read_background(bad)))
    return out


def run(videos: int, seed: int, artifact_stride: int = 2) -> dict:
    """Reads ``videos`` held-out videos; returns {"accuracy": {variant: {metric: acc}}, "artifact_auc": ...}."""
    world, rng = WorldConfig(), np.random.default_rng(seed)
    acc: dict[str, dict[str, list[bool]]] = {v: {} for v in VARIANTS}
    scores: dict[str, dict[str, list[float]]] = {v: {} for v in VARIANTS}
    for i in range(videos):
        story = sample_story(seed + i, "heldout", world.n_scenes, world.cast_size)
        video = render_story(story, world)
        degraded = np.stack([corrupt(f, "degrade", rng) for f in video.frames])
        rough = np.stack([corrupt(f, "rough", rng) for f in video.frames])
        for variant, frames in zip(VARIANTS, (video.frames, degraded, rough), strict=True):
            frame_hits = _frame_hits(story, video, frames)
            scene_hits = _scene_hits(story, video, frames, world.frames_per_scene)
            for level, hits in (("frame", frame_hits), ("scene", scene_hits)):
                for k, v in hits.items():
                    acc[variant].setdefault(f"{level}/{k}", []).extend(v)
            picked = slice(0, None, artifact_stride)
            for k, v in _artifact_scores(frames[picked], video.background[picked], rng).items():
                scores[variant].setdefault(k, []).extend(v)
    accuracy = {v: {k: float(np.mean(h)) for k, h in acc[v].items()} for v in VARIANTS}
    auc = {v: {k: roc_auc(scores[v]["none"], scores[v][k]) for k in CORRUPTIONS} for v in VARIANTS}
    mean_score = {v: {k: float(np.mean(s)) for k, s in scores[v].items()} for v in VARIANTS}
    failed = [f"{v} {m}: {accuracy[v][m]:.3f} < {lo}" for (v, m), lo in TARGETS.items() if accuracy[v][m] < lo]
    return {
        "videos": videos, "seed": seed, "frames": len(acc["clean"]["frame/background"]),
        "accuracy": accuracy, "artifact_auc": auc, "artifact_mean_score": mean_score,
        "targets_failed": failed,
    }


def to_markdown(result: dict) -> str:
    """Two tables: accuracies (rows = metric, columns = variant) and artefact AUCs."""
    acc = result["accuracy"]
    lines = ["| metric | " + " | ".join(VARIANTS) + " |", "|---|" + "---|" * len(VARIANTS)]
    lines.extend(f"| {metric} | " + " | ".join(f"{acc[v][metric]:.3f}" for v in VARIANTS) + " |" for metric in acc["clean"])
    auc, mean = result["artifact_auc"], result["artifact_mean_score"]
    lines += ["", "| artifact AUC (vs corrupted copies) | " + " | ".join(VARIANTS) + " |"]
    lines.append("|---|" + "---|" * len(VARIANTS))
    for kind in CORRUPTIONS:
        cells = [f"{auc[v][kind]:.3f} (mean {mean[v][kind]:.2f})" for v in VARIANTS]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines.append("| (uncorrupted mean score) | " + " | ".join(f"{mean[v]['none']:.3f}" for v in VARIANTS) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class CheckArgs:
    """The readers check's arguments (``python -m inflvg.world.readers_check --help``)."""

    videos: int = 20
    """Held-out videos to render and read."""
    seed: int = 0
    """Story seeds are seed, seed + 1, ..."""
    out: Path | None = None
    """Write the results here as JSON; None: print only."""
    artifact_stride: int = 2
    """Score artefacts on every n-th frame."""
    strict: bool = False
    """Exit 1 when an accuracy target is missed."""

    def __post_init__(self) -> None:
        positive_int(self, "videos")
        positive_int(self, "artifact_stride")


def main(argv: list[str] | None = None) -> int:
    args = cli.parse(CheckArgs, argv, prog="python -m inflvg.world.readers_check", description=__doc__)
    start = time.time()
    result = run(args.videos, args.seed, args.artifact_stride)
    result["seconds"] = round(time.time() - start, 1)
    print(f"{result['frames']} frames from {args.videos} held-out videos (seed {args.seed}), {result['seconds']} s\n")
    print(to_markdown(result))
    print("\ntargets: " + ("all met" if not result["targets_failed"] else "; ".join(result["targets_failed"])))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if args.strict and result["targets_failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
