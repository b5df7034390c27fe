"""Training crops of the generator's own output for the identity network, labelled by the world readers.

A renderer's characters are sharp; the shipped generator draws them as blurred blobs with the
right colours. An identity network trained on renders alone meets those blobs for the first
time at reward time. This module makes training-split videos with the shipped generator under
oracle-K, random-K and sliding-window context (so that some scenes draw their character well
and some do not), reads each scene with the world readers, and keeps every frame's subject
crop labelled with the identity the readers read in that scene. Scenes read as a held-out
identity are left out, so the network still never trains on a held-out combination.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from inflvg.world.readers import read_scene
from inflvg.world.render import Identity
from inflvg.world.story import sample_story, split_of

from .detector import StoryWorldDetector

STRATEGIES = ("oracle", "random", "window")
SEED_OFFSET = 500_000  # story seeds far from those the benchmark and calibration sample


@dataclass(frozen=True)
class GeneratedCrops:
    crops: list[np.ndarray]  # N (S, S, 3) uint8 subject crops
    labels: np.ndarray  # (N,) int, class index of the identity the readers read in the crop's scene
    kept_scenes: int
    skipped_scenes: int  # no subject read, or read as a held-out identity


def label_scenes(stories: list, frames: np.ndarray, fps: int, classes: dict[Identity, int], detector: StoryWorldDetector):
    """frames (B, T, H, W, 3) of generated stories -> (crops, labels, kept, skipped)."""
    crops, labels, kept, skipped = [], [], 0, 0
    for story, video in zip(stories, frames, strict=True):
        for j in range(len(story.scenes)):
            clip = video[j * fps : (j + 1) * fps]
            reading = read_scene(clip).subject
            ident = None if reading is None else Identity(*reading.attributes())
            if ident is None or ident not in classes or split_of(ident) != "train":
                skipped += 1
                continue
            kept += 1
            for crop in (detector.crop(f) for f in clip):
                if crop is not None:
                    crops.append(crop)
                    labels.append(classes[ident])
    return crops, labels, kept, skipped


def generated_crops(n_videos: int, classes: list[Identity], seed: int = 0, batch: int = 16) -> GeneratedCrops:
    """Generate ``n_videos`` training-split videos (strategies in turn) and label their crops."""
    from inflvg.config import WorldConfig
    from inflvg.context import make_strategy
    from inflvg.generate import generate
    from inflvg.protocol import load_backend
    from inflvg.world.eps import prompt_set_of

    gen, world = load_backend("storyworld"), WorldConfig()
    fps = gen.spec.frames_per_scene
    n_scenes = gen.spec.horizon_frames // fps  # the generator's training horizon, in scenes
    index, detector = {c: i for i, c in enumerate(classes)}, StoryWorldDetector()
    crops, labels, kept, skipped = [], [], 0, 0
    bar = tqdm(total=n_videos, desc="identity training videos", unit="video")
    for b, first in enumerate(range(0, n_videos, batch)):
        seeds = range(SEED_OFFSET + seed * n_videos + first, SEED_OFFSET + seed * n_videos + min(first + batch, n_videos))
        stories = [sample_story(s, "train", n_scenes, world.cast_size) for s in seeds]
        prompt_sets = [prompt_set_of(story, f"train-{s}") for story, s in zip(stories, seeds, strict=True)]
        res = generate(gen, prompt_sets, make_strategy(STRATEGIES[b % len(STRATEGIES)]), seed=seed + first)
        new_crops, new_labels, new_kept, new_skipped = label_scenes(stories, res.frames, fps, index, detector)
        crops, labels, kept, skipped = crops + new_crops, labels + new_labels, kept + new_kept, skipped + new_skipped
        bar.set_postfix(crops=len(crops), refresh=False)
        bar.update(len(seeds))
    bar.close()
    return GeneratedCrops(crops, np.asarray(labels, np.int64), kept, skipped)
