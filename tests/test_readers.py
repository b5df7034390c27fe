"""World readers: accurate on renders, robust to generator-like blur and noise, artefacts flagged."""

import json

import numpy as np
import pytest

from inflvg.config import WorldConfig
from inflvg.world import render_story, sample_story
from inflvg.world.readers import (
    CORRUPTIONS,
    SubjectReading,
    artifact_score,
    attribute_agreement,
    corrupt,
    read_background,
    read_scene,
    read_subject,
    which_character,
)
from inflvg.world.readers_check import main as check_main
from inflvg.world.readers_check import roc_auc
from inflvg.world.render import Identity, background
from inflvg.world.vocab import BACKGROUND_NAMES

ATTRS = ("shape", "colour1", "colour2", "pattern", "size")


@pytest.fixture(scope="module")
def videos():
    """Three held-out stories, rendered: 96 frames covering many identities and backgrounds."""
    world = WorldConfig()
    return [(s, render_story(s, world)) for s in (sample_story(100 + i, "heldout", 8, 4) for i in range(3))]


def _accuracy(videos, transform):
    hits = {k: [] for k in ("background", *ATTRS, "character")}
    for story, video in videos:
        for t, raw in enumerate(video.frames):
            frame = transform(raw)
            truth = story.cast[video.character[t]]
            bg = read_background(frame)
            reading = read_subject(frame, bg)
            hits["background"].append(bg == video.background[t])
            for a, want in zip(ATTRS, truth.attributes(), strict=True):
                hits[a].append(reading is not None and getattr(reading, a) == want)
            hits["character"].append(which_character(reading, story.cast) == video.character[t])
    return {k: np.mean(v) for k, v in hits.items()}


def test_readers_are_accurate_on_clean_renders(videos):
    acc = _accuracy(videos, lambda f: f)
    assert acc["background"] >= 0.97 and acc["character"] >= 0.97, acc
    assert all(acc[a] >= 0.9 for a in ATTRS), acc


def test_readers_read_through_generator_like_degradation(videos):
    rng = np.random.default_rng(0)
    acc = _accuracy(videos, lambda f: corrupt(f, "degrade", rng))
    assert acc["background"] >= 0.95 and acc["character"] >= 0.9, acc
    assert all(acc[a] >= 0.85 for a in ATTRS), acc


def test_read_scene_votes_over_frames(videos):
    story, video = videos[0]
    rng = np.random.default_rng(1)
    for i, scene in enumerate(story.scenes):
        frames = np.stack([corrupt(f, "rough", rng) for f in video.frames[i * 4 : (i + 1) * 4]])
        reading = read_scene(frames)
        assert reading.n_frames == 4 and reading.frames_with_subject == 4
        assert BACKGROUND_NAMES[reading.background] == scene.background
        assert which_character(reading.subject, story.cast) == scene.character


def test_background_only_frame_has_no_subject():
    for i, name in enumerate(BACKGROUND_NAMES):
        frame = background(name, 32).copy()
        assert read_background(frame) == i
        assert read_subject(frame, i) is None
        assert artifact_score(frame, i) == 0.0
    scene = read_scene(np.stack([background("beach", 32)] * 4))
    assert scene.subject is None and scene.frames_with_subject == 0
    assert which_character(scene.subject, (Identity("circle", "red", "blue", "plain", "small"),)) is None


def test_which_character_and_agreement():
    cast = (
        Identity("circle", "red", "blue", "plain", "small"),
        Identity("square", "green", "cyan", "dotted", "large"),
        Identity("circle", "red", "blue", "plain", "large"),
    )
    reading = SubjectReading("square", "green", "cyan", "dotted", "large", pixels=196)
    assert attribute_agreement(reading, cast[1]) == 1.0
    assert attribute_agreement(reading, cast[0]) == 0.0
    assert attribute_agreement(None, cast[0]) == 0.0 and attribute_agreement(reading, None) == 0.0
    assert which_character(reading, cast) == 1
    tie = SubjectReading("circle", "red", "blue", "plain", "medium", pixels=80)  # agrees 4/5 with 0 and 2
    assert which_character(tie, cast) == 0
    assert which_character(None, cast) is None


def test_artifact_score_flags_corruptions(videos):
    rng = np.random.default_rng(2)
    frames = [(f, int(b)) for _, v in videos for f, b in zip(v.frames[::3], v.background[::3], strict=True)]
    clean = [artifact_score(f, b) for f, b in frames]
    degraded = [artifact_score(g, read_background(g)) for g in (corrupt(f, "degrade", rng) for f, _ in frames)]
    assert max(clean) < 0.05 and np.mean(degraded) < 0.1
    for kind in CORRUPTIONS:
        bad = [artifact_score(g, read_background(g)) for g in (corrupt(f, kind, rng) for f, _ in frames)]
        assert all(0.0 <= s <= 1.0 for s in bad)
        assert np.mean(bad) > 0.4 and roc_auc(clean, bad) > 0.95, kind
        assert roc_auc(degraded, bad) > 0.9, kind


def test_corrupt_keeps_shape_and_refuses_unknown_kinds():
    frame = background("forest", 32).copy()
    rng = np.random.default_rng(0)
    for kind in (*CORRUPTIONS, "degrade", "rough"):
        out = corrupt(frame, kind, rng)
        assert out.shape == frame.shape and out.dtype == np.uint8
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(frame, "jpeg", rng)


def test_roc_auc():
    assert roc_auc([0, 0], [1, 2]) == 1.0
    assert roc_auc([1, 2], [0, 0]) == 0.0
    assert roc_auc([0.5], [0.5]) == 0.5


def test_readers_check_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "check.json"
    assert check_main(["--videos", "1", "--seed", "3", "--artifact-stride", "8", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["accuracy"]["clean"]["scene/character"] >= 0.9
    assert set(result["artifact_auc"]["clean"]) == set(CORRUPTIONS)
    assert "| frame/background |" in capsys.readouterr().out
