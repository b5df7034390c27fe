"""Alignment reward: the shipped StoryWorld CLIP, and the loader real open_clip checkpoints go through."""

import json

import numpy as np
import pytest
import torch

from inflvg.config import WorldConfig
from inflvg.world import render_story, sample_story
from inflvg.world.vocab import BACKGROUND_NAMES
from reward_actors.alignment import AlignmentScorer, logistic_fit, register_model
from reward_actors.train_clip import edit
from reward_actors.types import SceneBatch

TINY = {  # a random open_clip CLIP small enough to build in a second
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def default():
    torch.set_num_threads(1)
    return AlignmentScorer()


@pytest.fixture(scope="module")
def heldout():
    """Two held-out stories: 16 scenes of (4, 32, 32, 3) frames, their prompts, the stories."""
    world = WorldConfig()
    stories = [sample_story(s, "heldout", world.n_scenes, world.cast_size) for s in (0, 1)]
    frames = [f for s in stories for f in render_story(s, world).frames.reshape(world.n_scenes, world.frames_per_scene, 32, 32, 3)]
    return frames, [p for s in stories for p in s.prompts()], stories


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """(config .json path, checkpoint path, state_dict) of a random tiny CLIP saved as a user would."""
    import open_clip

    config = tmp_path / "tiny-test-clip.json"
    config.write_text(json.dumps(TINY))
    torch.manual_seed(0)
    model = open_clip.create_model(register_model(str(config)))
    checkpoint = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    return config, checkpoint, model.state_dict()


def test_default_loads_offline_and_prefers_the_true_background(default, heldout):
    frames, prompts, stories = heldout
    right = default.score(SceneBatch(frames, prompts))
    wrong_prompts = []
    for k, story in enumerate(s for s in stories for _ in s.scenes):
        i = k % len(story.scenes)
        bg = BACKGROUND_NAMES[(BACKGROUND_NAMES.index(story.scenes[i].background) + 1 + k % 7) % 8]
        wrong_prompts.append(edit(story, i, background=bg))
    wrong = default.score(SceneBatch(frames, wrong_prompts))
    assert right.valid.all() and ((right.scores >= 0) & (right.scores <= 1)).all()
    assert right.scores.mean() > wrong.scores.mean() + 0.2
    assert (right.scores > wrong.scores).mean() >= 0.8
    assert default.name == "open_clip:clip_config" and default.version.startswith("clip_config@")
    assert default.calibration is not None and right.counts["frames_scored"] == 16 * 4


def test_batched_scores_equal_one_by_one(default, heldout):
    frames, prompts, _ = heldout
    big = np.repeat(np.repeat(frames[2], 2, axis=1), 2, axis=2)  # (4, 64, 64, 3): resized on the way in
    long = np.concatenate([frames[3]] * 3)  # 12 frames, more than frames_per_scene
    scenes = [frames[0], frames[1][:1], big, long]
    batch = SceneBatch(scenes, prompts[:4])
    together = default.score(batch).scores
    alone = np.array([default.score(batch.subset([i])).scores[0] for i in range(4)])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert default.score(SceneBatch([], [])).scores.shape == (0,)


def test_real_loader_takes_a_config_file_or_registered_name_and_a_local_checkpoint(tiny_checkpoint, heldout):
    config, checkpoint, saved = tiny_checkpoint
    frames, prompts, _ = heldout
    for name in (str(config), "tiny-test-clip"):  # a config path, then the name it registered
        scorer = AlignmentScorer(model_name=name, checkpoint=str(checkpoint), frames_per_scene=2)
        loaded = scorer.model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in saved.items())  # the weights, not a random init
        result = scorer.score(SceneBatch(frames[:3], prompts[:3]))
        cos = scorer.cosines(SceneBatch(frames[:3], prompts[:3]))
        assert scorer.calibration is None and scorer.image_size == 16
        np.testing.assert_allclose(result.scores, (cos + 1) / 2)
        assert result.counts["frames_scored"] == 6


def test_loader_errors_are_clear(tiny_checkpoint, tmp_path):
    config, checkpoint, _ = tiny_checkpoint
    with pytest.raises(FileNotFoundError, match="not found"):
        AlignmentScorer(model_name=str(config), checkpoint=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="unknown open_clip model"):
        AlignmentScorer(model_name="ViT-Q-99", checkpoint=str(checkpoint))
    with pytest.raises(FileNotFoundError, match="config"):
        AlignmentScorer(model_name=str(tmp_path / "nope.json"), checkpoint=str(checkpoint))
    with pytest.raises(ValueError, match="both"):
        AlignmentScorer(model_name=str(config))
    with pytest.raises(ValueError, match="does not load"):  # the shipped weights into the tiny test architecture
        AlignmentScorer(model_name=str(config), checkpoint="reward_actors/weights/clip_storyworld.pt")


def test_scene_batch_rejects_bad_frames(heldout):
    frames, prompts, _ = heldout
    for bad, why in ((frames[0].astype(np.float32), "must be uint8"), (frames[0][..., 0], "must have shape"), (frames[0][:0], "has no frames")):
        with pytest.raises(ValueError, match=why):
            SceneBatch([bad], prompts[:1])


def test_logistic_fit_recovers_a_known_slope():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-(4 * x - 1)))).astype(float)
    fit = logistic_fit(x, y, ridge=0.0)
    assert abs(fit["slope"] - 4) < 0.5 and abs(fit["offset"] + 1) < 0.25
