"""The benchmark's per-video scores on ground-truth renders, and after a returning scene is spoiled."""

import numpy as np

from inflvg.bench.quality import score_video
from inflvg.config import WorldConfig
from inflvg.world import render_story, sample_story


def _story_with_a_return(world):
    for seed in range(100):
        story = sample_story(seed, "heldout", world.n_scenes, world.cast_size)
        returns = [i for i, sc in enumerate(story.scenes) if i > 0 and not sc.first_appearance]
        if returns:
            return story, returns
    raise AssertionError("no held-out story with a returning character")


def test_truth_scores_full_marks_and_a_wrong_return_is_counted():
    world = WorldConfig()
    fps = world.frames_per_scene
    story, returns = _story_with_a_return(world)
    frames = render_story(story, world).frames
    truth = score_video(story, frames, fps)
    assert (truth.alignment, truth.character, truth.returns, truth.identity) == (1.0, 1.0, 1.0, 1.0)

    back = returns[0]
    other = next(i for i, sc in enumerate(story.scenes) if sc.character != story.scenes[back].character)
    spoiled = frames.copy()
    spoiled[back * fps : (back + 1) * fps] = frames[other * fps : (other + 1) * fps]
    s = score_video(story, spoiled, fps)
    assert s.returns == (len(returns) - 1) / len(returns)
    assert s.character == (len(story.scenes) - 1) / len(story.scenes)
    assert s.identity < 1.0


def test_a_video_without_returns_has_no_returns_score():
    world = WorldConfig(n_scenes=2)
    story = sample_story(0, "heldout", world.n_scenes, world.cast_size)
    s = score_video(story, render_story(story, world).frames, world.frames_per_scene)
    assert np.isnan(s.returns) and np.isnan(s.identity) and s.character == 1.0
