"""Reward calibration's reader side: the identity agreement over frame pairs, sampled as the
identity reward samples them, on rendered videos (where the readers read exactly)."""

import numpy as np

from inflvg.config import WorldConfig
from inflvg.world.readers import attribute_agreement
from inflvg.world.render import background
from inflvg.world.story import render_story, sample_story
from reward_actors.calibrate import reader_identity_pairs, reader_identity_votes


def test_frame_pair_agreement_is_the_attribute_agreement_of_what_each_frame_shows():
    world = WorldConfig(n_scenes=8, cast_size=4)
    story = sample_story(2, "heldout", world.n_scenes, world.cast_size)
    frames = render_story(story, world).frames.copy()
    fps = world.frames_per_scene
    ret = next(i for i, sc in enumerate(story.scenes) if not sc.first_appearance)
    assert reader_identity_pairs(story, frames, fps, ret) == 1.0 == reader_identity_votes(story, frames, fps, ret)

    other = next(i for i, sc in enumerate(story.scenes) if sc.character != story.scenes[ret].character)
    swapped = frames.copy()
    swapped[ret * fps : ret * fps + 2] = frames[other * fps : other * fps + 2]  # half the new scene shows another character
    expected = (1.0 + attribute_agreement(story.cast[story.scenes[other].character], story.cast[story.scenes[ret].character])) / 2
    assert np.isclose(reader_identity_pairs(story, swapped, fps, ret), expected)

    empty = frames.copy()
    empty[ret * fps : (ret + 1) * fps] = background(story.scenes[ret].background, world.frame_size)
    assert np.isnan(reader_identity_pairs(story, empty, fps, ret))  # no subject read: left out, not scored 0
