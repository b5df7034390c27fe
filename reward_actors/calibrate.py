"""Calibrate the default reward models against the world readers on generated held-out videos.

    python -m reward_actors.calibrate --split heldout --seed 0 --out results/calibration.json

The shipped generator makes each prompt set's video under oracle-K, random-K and sliding-window
context (same noise), so scenes range from consistent to not. Then:
- alignment: every generated scene is scored against its own prompt and against the same prompt
  with the background swapped; the reader's value is the share of frames whose read background is
  the prompt's. Spearman over all (scene, prompt) pairs.
- identity: every returning scene is scored against its subject's earlier scenes. The readers'
  value follows the reward's own protocol: the same sampled frames (up to 8 of the new scene, 8
  of the history), the subject read in each frame, and the mean attribute agreement over every
  (new, history) pair of frames that both show one, as alignment's value is a mean over frames.
  Spearman. Also reported, ``spearman_identity_scene_vote``: against the agreement between one
  per-attribute vote over each scene's frames (the benchmark's identity measure), which throws
  away how consistently a blurred subject reads.
- combined: per prompt set, is the oracle video's mean combined reward above the random one's?
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from inflvg.context import make_strategy
from inflvg.generator.sample import generate
from inflvg.generator.weights import load_generator
from inflvg.world.readers import attribute_agreement, read_background, read_scene, read_subject
from inflvg.world.story import SPLITS, Story, sample_story, subject_history
from inflvg.world.vocab import BACKGROUND_NAMES, BACKGROUNDS

from .alignment import AlignmentScorer
from .artifacts import ArtifactScorer
from .combine import combine
from .config import RewardConfig
from .identity import IdentityScorer, sample_frames
from .types import SceneBatch

STRATEGIES = ("oracle", "random", "window")


def swap_background(prompt: str, current: str, rng: np.random.Generator) -> str:
    other = rng.choice([b for b in BACKGROUND_NAMES if b != current])
    head = prompt[: prompt.rindex(BACKGROUNDS[current][2] + " " + current)]
    return f"{head}{BACKGROUNDS[other][2]} {other}"


def video_batch(story: Story, frames: np.ndarray, fps: int) -> SceneBatch:
    n = len(story.scenes)
    return SceneBatch(
        [frames[i * fps : (i + 1) * fps] for i in range(n)],
        story.prompts(),
        [subject_history(story, frames, fps, i) for i in range(n)],
    )


def reader_alignment(frames: np.ndarray, prompt_background: str) -> float:
    return float(np.mean([BACKGROUND_NAMES[read_scene(f[None]).background] == prompt_background for f in frames]))


def reader_identity_votes(story: Story, frames: np.ndarray, fps: int, scene: int) -> float:
    """Attribute agreement of the scene-vote readings, now against each earlier scene, mean."""
    read = lambda i: read_scene(frames[i * fps : (i + 1) * fps]).subject  # noqa: E731
    earlier = [i for i in range(scene) if story.scenes[i].character == story.scenes[scene].character]
    now = read(scene)
    return float(np.mean([attribute_agreement(now, read(i)) for i in earlier]))


def reader_identity_pairs(story: Story, frames: np.ndarray, fps: int, scene: int, k_new: int = 8, k_history: int = 8) -> float:
    """Mean attribute agreement over (new, history) frame pairs, the frames sampled as the identity
    reward samples them and read one by one; nan when either side shows no subject."""
    def readings(clip: np.ndarray, k: int) -> list:
        return [r for r in (read_subject(f, read_background(f)) for f in sample_frames(clip, k)) if r is not None]

    new = readings(frames[scene * fps : (scene + 1) * fps], k_new)
    old = readings(subject_history(story, frames, fps, scene), k_history)
    if not new or not old:
        return float("nan")
    return float(np.mean([attribute_agreement(a, b) for a in new for b in old]))


def generate_all(stories: list[Story], seed: int, batch: int = 16) -> tuple[dict[str, np.ndarray], int]:
    model, world, ctx, _ = load_generator()
    out = {}
    for name in STRATEGIES:
        parts = []
        for start in range(0, len(stories), batch):
            res = generate(model, stories[start : start + batch], world, ctx, make_strategy(name), seed=seed + start)
            parts.append(res.frames)
        out[name] = np.concatenate(parts)
        print(f"  generated {len(stories)} videos with {name}", file=sys.stderr)
    return out, world.frames_per_scene


def calibrate(split: str, seed: int, n_sets: int, identity: str | None = None) -> dict:
    stories = [sample_story(seed + i, split, 8, 4) for i in range(n_sets)]
    videos, fps = generate_all(stories, seed)
    align, ident, art = AlignmentScorer(), IdentityScorer(identity), ArtifactScorer()
    weights = dict(RewardConfig().weights)
    rng = np.random.default_rng(seed)
    a_model, a_reader, i_model, i_pairs, i_votes, mean_reward = [], [], [], [], [], {s: [] for s in STRATEGIES}
    for name, frames_all in videos.items():
        for story, frames in zip(stories, frames_all):
            batch = video_batch(story, frames, fps)
            results = {"alignment": align.score(batch), "identity": ident.score(batch), "artifacts": art.score(batch)}
            mean_reward[name].append(float(np.nanmean(combine(results, weights).total)))
            swapped = [swap_background(p, sc.background, rng) for p, sc in zip(batch.prompts, story.scenes)]
            a_swapped = align.score(SceneBatch(batch.frames, swapped)).scores
            for i, sc in enumerate(story.scenes):
                a_model += [results["alignment"].scores[i], a_swapped[i]]
                a_reader += [reader_alignment(batch.frames[i], sc.background), reader_alignment(batch.frames[i], swapped[i].split()[-1])]
                if results["identity"].valid[i]:
                    i_model.append(results["identity"].scores[i])
                    i_pairs.append(reader_identity_pairs(story, frames, fps, i))
                    i_votes.append(reader_identity_votes(story, frames, fps, i))
    above = np.array(mean_reward["oracle"]) > np.array(mean_reward["random"])
    return {
        "split": split, "seed": seed, "prompt_sets": n_sets,
        "spearman_alignment": float(spearmanr(a_model, a_reader).statistic),
        "spearman_identity": float(spearmanr(i_model, i_pairs, nan_policy="omit").statistic),
        "spearman_identity_scene_vote": float(spearmanr(i_model, i_votes).statistic),
        "oracle_above_random": float(above.mean()),
        "mean_combined_reward": {k: float(np.mean(v)) for k, v in mean_reward.items()},
        "alignment_pairs": len(a_model), "identity_pairs": len(i_model), "identity_pairs_unread": int(np.isnan(i_pairs).sum()),
        "models": {"alignment": [align.name, align.version], "identity": [ident.name, ident.version], "artifacts": [art.name, art.version]},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m reward_actors.calibrate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=SPLITS, default="heldout")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt-sets", type=int, default=48)
    ap.add_argument("--identity", help="identity recognition model (ONNX file or model-pack folder; default: the shipped one)")
    ap.add_argument("--out", default="results/calibration.json")
    args = ap.parse_args(argv)
    start = time.time()
    report = calibrate(args.split, args.seed, args.prompt_sets, args.identity)
    report["seconds"] = round(time.time() - start)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
