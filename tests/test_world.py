"""StoryWorld: deterministic stories, disjoint splits, prompt structure, the grammar and its ground truth."""

import itertools

import numpy as np
import pytest

from inflvg.config import WorldConfig
from inflvg.prompts import PromptSet
from inflvg.world import ground_truth, prompt_set_of, render_story, sample_story, split_of
from inflvg.world.eps import parse_row
from inflvg.world.story import HELDOUT_TRIPLES, SPLITS

SEEDS = range(40)


def _triple(identity):
    return (identity.shape, identity.colour1, identity.pattern)


@pytest.mark.parametrize("split", SPLITS)
def test_stories_are_deterministic_from_seed(split):
    a, b = sample_story(7, split, 8, 4), sample_story(7, split, 8, 4)
    assert a == b and a.prompts() == b.prompts()
    assert any(sample_story(s, split, 8, 4).prompts() != a.prompts() for s in range(8, 12))
    world = WorldConfig()
    np.testing.assert_array_equal(render_story(a, world).frames, render_story(b, world).frames)


def test_train_and_heldout_splits_are_disjoint():
    for seed in SEEDS:
        for ident in sample_story(seed, "heldout", 8, 4).cast:
            assert split_of(ident) == "heldout" and _triple(ident) in HELDOUT_TRIPLES
        for ident in sample_story(seed, "train", 8, 4).cast:
            assert split_of(ident) == "train" and _triple(ident) not in HELDOUT_TRIPLES


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="split must be one of"):
        sample_story(0, "test", 8, 4)


@pytest.mark.parametrize("split", SPLITS)
def test_consecutive_scenes_have_different_subjects(split):
    for seed in SEEDS:
        chars = [sc.character for sc in sample_story(seed, split, 12, 4).scenes]
        assert all(a != b for a, b in itertools.pairwise(chars))


@pytest.mark.parametrize("split", SPLITS)
def test_the_opening_character_held_by_the_sink_never_returns(split):
    for seed in SEEDS:
        chars = [sc.character for sc in sample_story(seed, split, 16, 4).scenes]
        assert chars[0] == 0 and 0 not in chars[1:]
        assert set(chars[1:]) == {1, 2, 3}  # the rest of the cast still comes and goes
    assert [sc.character for sc in sample_story(0, "train", 5, 2).scenes] == [0, 1, 0, 1, 0]  # no one else to follow


def test_first_scene_of_a_character_is_explicit_and_later_ones_referential():
    for seed in SEEDS:
        story = sample_story(seed, "train", 8, 4)
        seen = set()
        for sc, prompt in zip(story.scenes, story.prompts(), strict=True):
            described = story.cast[sc.character].describe()
            letter = story.letters[sc.character]
            assert sc.first_appearance == (sc.character not in seen)
            if sc.first_appearance:
                assert prompt.startswith(f"character {letter}, {described},")
            else:
                assert prompt.startswith(f"character {letter} ") and "," not in prompt and described not in prompt
            assert prompt.endswith(sc.background)
            seen.add(sc.character)


def test_storyworld_prompt_sets_carry_their_ground_truth_and_tags_from_the_text():
    for seed in range(5):
        for split in SPLITS:
            story = sample_story(seed, split, 8, 4)
            ps = prompt_set_of(story, "s")
            assert list(ps.scenes) == story.prompts()
            assert ps.subjects == tuple(f"character {story.letters[sc.character]}" for sc in story.scenes)
            truth = ground_truth(ps)
            assert [(truth.cast[sc.character], sc.background, sc.action) for sc in truth.scenes] == [
                (story.cast[sc.character], sc.background, sc.action) for sc in story.scenes
            ]
    assert ground_truth(PromptSet("free", ("A golden retriever runs across a lawn",))) is None


DESCRIBED = "character A, a small red and blue striped triangle, bounces in the"
GOOD = {"0": f"{DESCRIBED} desert", "1": "character A jumps at night"}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"0": f"{DESCRIBED} jungle"}, "unknown background 'jungle'"),
        ({"0": "character B jumps at night"}, "referred to before it is described"),
        ({"0": GOOD["0"], "2": GOOD["1"]}, "consecutive"),
    ],
)
def test_the_grammar_names_what_it_cannot_parse(row, message):
    with pytest.raises(ValueError, match=message):
        parse_row(row, 0, "row 2")
