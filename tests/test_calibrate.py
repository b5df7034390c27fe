"""Reward calibration's reader side: the identity agreement over frame pairs, sampled as the
identity reward samples them, on rendered videos (where the readers read exactly), always against
the true character's history; and the reward's history under each protocol (from the prompts,
from ground truth, from untagged prompts)."""

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


def test_reward_history_protocols_and_the_readers_ground_truth():
    import dataclasses

    from inflvg.world.eps import prompt_set_of
    from reward_actors.calibrate import history_scenes, identity_by_protocol, wrong_character_scenes

    world = WorldConfig(n_scenes=8, cast_size=4)
    story = sample_story(2, "heldout", world.n_scenes, world.cast_size)
    ps = prompt_set_of(story, "x")
    hist = history_scenes(story, ps, dataclasses.replace(ps, subjects=None))
    truth = [[i for i in range(s) if story.scenes[i].character == sc.character] for s, sc in enumerate(story.scenes)]
    assert hist == {"text": truth, "ground_truth": truth, "untagged": truth}  # StoryWorld prompts name their subject

    frames = render_story(story, world).frames.copy()
    fps = world.frames_per_scene
    first = next(i for i, sc in enumerate(story.scenes) if sc.first_appearance and i > 0)
    assert np.isnan(reader_identity_votes(story, frames, fps, first)) and np.isnan(reader_identity_pairs(story, frames, fps, first))

    class CountingScorer:  # records what it is asked, scores by history length
        name, version, calls = "count", "0", []

        def score(self, batch):
            from reward_actors.types import ScoreResult

            self.calls.append(len(batch))
            scores = np.array([len(h) / 100 for h in batch.history])
            return ScoreResult(scores, np.ones(len(batch), bool), [None] * len(batch), self.name, self.version)

    wrong = dict(hist, ground_truth=[[0] if s else [] for s in range(world.n_scenes)])  # a differing protocol
    out = identity_by_protocol(CountingScorer(), story.prompts(), frames, fps, wrong)
    pairs = {(s, tuple(t)) for s, t in enumerate(truth) if t} | {(s, (0,)) for s in range(1, world.n_scenes)}
    assert CountingScorer.calls == [len(pairs)] and len(pairs) < 2 * world.n_scenes  # one call; shared pairs scored once
    np.testing.assert_array_equal(out["text"].scores, out["untagged"].scores)
    for s in range(world.n_scenes):
        assert out["text"].reasons[s] == (None if truth[s] else "no history")
    np.testing.assert_allclose(out["ground_truth"].scores[1:], fps / 100)  # history: scene 0's frames
    assert out["ground_truth"].reasons[0] == "no history" and np.isnan(out["ground_truth"].scores[0])

    for s, sc in enumerate(story.scenes):
        other = wrong_character_scenes(story, s)
        if sc.first_appearance:
            assert other is None
        elif other is not None:
            assert story.scenes[other].character != sc.character and other == max(i for i in range(s) if story.scenes[i].character != sc.character)
