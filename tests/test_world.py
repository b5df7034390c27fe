"""StoryWorld: deterministic stories, disjoint splits, prompt structure, EPS files."""

import json

import numpy as np
import pytest

from inflvg.config import WorldConfig
from inflvg.world import load_eps, render_story, sample_story, save_eps, split_of
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
        assert all(a != b for a, b in zip(chars, chars[1:]))


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
        for sc, prompt in zip(story.scenes, story.prompts()):
            described = story.cast[sc.character].describe()
            letter = story.letters[sc.character]
            assert sc.first_appearance == (sc.character not in seen)
            if sc.first_appearance:
                assert prompt.startswith(f"character {letter}, {described},")
            else:
                assert prompt.startswith(f"character {letter} ") and "," not in prompt and described not in prompt
            assert prompt.endswith(sc.background)
            seen.add(sc.character)


def test_eps_round_trip_keeps_prompts(tmp_path):
    stories = [sample_story(s, split, 8, 4) for s in range(5) for split in SPLITS]
    path = tmp_path / "prompts.jsonl"
    save_eps(stories, path)
    loaded = load_eps(path)
    assert [s.prompts() for s in loaded] == [s.prompts() for s in stories]
    assert [len(s.cast) for s in loaded] == [len({sc.character for sc in s.scenes}) for s in stories]


DESCRIBED = "character A, a small red and blue striped triangle, bounces in the"
GOOD = {"0": f"{DESCRIBED} desert", "1": "character A jumps at night"}


def _write(tmp_path, lines):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize(
    "row, message",
    [
        ('{"0": "character A, a small red', "not valid JSON"),
        (json.dumps({"0": f"{DESCRIBED} jungle"}), "unknown background 'jungle'"),
        (json.dumps({"0": "character B jumps at night"}), "referred to before it is described"),
        (json.dumps({"0": GOOD["0"], "2": GOOD["1"]}), "consecutive"),
        (json.dumps(["character A jumps at night"]), "JSON object"),
    ],
)
def test_bad_rows_name_the_row(tmp_path, row, message):
    path = _write(tmp_path, [json.dumps(GOOD), row])
    with pytest.raises(ValueError, match=message) as err:
        load_eps(path)
    assert f"{path}:2" in str(err.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_eps(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="holds no rows"):
        load_eps(_write(tmp_path, ["", "   "]))
