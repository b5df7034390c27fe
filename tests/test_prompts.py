"""Prompt sets: free-text EPS files in and out, bad rows named, and the subject a prompt names."""

import json
from dataclasses import replace

import pytest

from inflvg.prompts import PromptSet, load_prompts, save_prompts
from inflvg.subjects import leading_words, subject_keys, subject_scenes
from inflvg.world import prompt_set_of, sample_story

FREE = "tests/data/free_text.jsonl"


def test_free_text_file_loads_with_ids_and_round_trips(tmp_path):
    sets = load_prompts(FREE)
    assert len(sets) == 8 and all(ps.n_scenes == 6 and ps.subjects is None for ps in sets)
    assert sets[0].id == "free_text-0" and sets[0].scenes[0].startswith("A golden retriever runs")
    tagged = replace(sets[0], subjects=("golden retriever", "grey tabby cat", "golden retriever", None, "grey tabby cat", "golden retriever"))
    mixed = [tagged, PromptSet("short", ("A red kite dips over the dunes",))]
    path = tmp_path / "out.jsonl"
    save_prompts(mixed, path)
    back = load_prompts(path)
    assert [(p.scenes, p.subjects) for p in back] == [(p.scenes, p.subjects) for p in mixed]
    assert json.loads(path.read_text().splitlines()[0])["subjects"][3] is None


def _write(tmp_path, rows: list[str]):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(r + "\n" for r in rows))
    return path


GOOD = json.dumps({"0": "A dog runs", "1": "The dog sleeps"})


@pytest.mark.parametrize(
    ("row", "key", "message"),
    [
        ('{"0": "A dog', None, "not valid JSON"),
        (json.dumps({"0": 7}), "'0'", "must be a string, got int"),
        (json.dumps({"0": "A dog runs", "1": "   "}), "'1'", "is empty"),
        (json.dumps({}), None, "holds no scenes"),
        (json.dumps({"subjects": []}), None, "holds no scenes"),
        (json.dumps({"0": "A dog\x00 runs"}), "'0'", "control character"),
        (json.dumps({"0": "A dog runs", "2": "x"}), None, "unexpected key"),
        (json.dumps({"0": "A dog runs", "caption": "x"}), None, r"unexpected key\(s\) \['caption'\]"),
        (json.dumps({"0": "A dog runs", "subjects": ["cat"]}), "'subjects'", "'cat' \\(scene 0\\) names a subject that no scene prompt mentions"),
        (json.dumps({"0": "A dog runs", "subjects": ["dog", "dog"]}), "'subjects'", "one tag .* per scene"),
        (json.dumps({"0": "A dog runs", "subjects": [3]}), "'subjects'", "non-empty string or null"),
        (json.dumps(["A dog runs"]), None, "JSON object"),
    ],
)
def test_bad_rows_name_the_file_row_and_key(tmp_path, row, key, message):
    path = _write(tmp_path, [GOOD, row])
    with pytest.raises(ValueError, match=message) as err:
        load_prompts(path)
    assert f"{path}:2" in str(err.value)
    if key:
        assert f"key {key}" in str(err.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_prompts(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="holds no rows"):
        load_prompts(_write(tmp_path, ["", "   "]))


def test_subject_words_are_the_leading_phrase():
    assert leading_words("A golden retriever runs across a wet lawn, face the camera") == ("golden", "retriever")
    assert leading_words("The man in a black suit sits on a bench") == ("man", "black", "suit")
    assert leading_words("character A, a small red and blue striped triangle, bounces") == ("character", "a")
    assert leading_words("A dog wearing a hat") == ("dog",)


def test_subjects_from_text_match_the_tags_storyworld_parses():
    for seed in range(30):
        tagged = prompt_set_of(sample_story(seed, "heldout", 8, 4), "s")
        untagged = replace(tagged, subjects=None)
        for i in range(8):
            assert subject_scenes(tagged, i) == subject_scenes(untagged, i)


def test_subjects_on_free_text():
    sets = load_prompts(FREE)
    assert [subject_scenes(sets[0], i) for i in range(6)] == [[], [], [0], [], [1], [0, 2]]
    assert [subject_scenes(sets[7], i) for i in range(6)] == [[], [], [0], [], [0, 2], [3]]  # painter, sheep, dog
    one = PromptSet("one", ("A golden retriever runs, face the camera", "The golden retriever sleeps, face the camera"))
    assert subject_scenes(one, 1) == [0]  # a single subject named in every scene is still a subject
    tagged = PromptSet("t", ("A dog runs", "A hot dog stand", "The dog sleeps"), ("dog", "hot dog", "dog"))
    assert subject_scenes(tagged, 2) == [0] and subject_keys(tagged)[1] == frozenset({"hot", "dog"})  # tags match exactly
