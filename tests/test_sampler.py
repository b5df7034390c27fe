"""The training driver's prompt sampler: deterministic, resumable, epochs over a file in a seeded shuffle."""

import pytest

from cluster.sampler import PromptSampler
from inflvg.prompts import load_prompts, save_prompts

FREE = "tests/data/free_text.jsonl"


def ids(sets) -> list[str]:
    return [ps.id for ps in sets]


def test_a_file_is_drawn_epoch_by_epoch_each_in_its_own_shuffle():
    sampler = PromptSampler(seed=3, n_scenes=8, cast_size=4, prompts=FREE)
    epochs = [ids(sampler.next(8)) for _ in range(3)]
    every = sorted(ids(load_prompts(FREE)))
    assert all(sorted(e) == every for e in epochs)  # each epoch visits every row once
    assert len({tuple(e) for e in epochs}) == 3 and epochs[0] != every  # shuffled, differently each epoch
    assert all(ps.n_scenes == 6 for ps in sampler.next(5))  # the file's scene count, not the preset's 8
    other = PromptSampler(seed=4, n_scenes=8, cast_size=4, prompts=FREE)
    assert ids(other.next(8)) != epochs[0]


def test_resume_continues_the_same_sequence_and_refuses_another_file(tmp_path):
    whole = ids(PromptSampler(seed=1, n_scenes=8, cast_size=4, prompts=FREE).next(20))
    first = PromptSampler(seed=1, n_scenes=8, cast_size=4, prompts=FREE)
    head = ids(first.next(11))  # a batch that crosses an epoch boundary
    resumed = PromptSampler(seed=1, n_scenes=8, cast_size=4, prompts=FREE)
    resumed.restore(first.state())
    assert head + ids(resumed.next(9)) == whole
    changed = tmp_path / "changed.jsonl"
    save_prompts(load_prompts(FREE)[:5], changed)
    with pytest.raises(ValueError, match="trained on other prompts"):
        PromptSampler(seed=1, n_scenes=8, cast_size=4, prompts=str(changed)).restore(first.state())


def test_storyworld_is_the_default_source():
    a, b = PromptSampler(seed=0, n_scenes=4, cast_size=3), PromptSampler(seed=0, n_scenes=4, cast_size=3)
    sets = a.next(3)
    assert ids(sets) == ["train-0-0", "train-0-1", "train-0-2"] and all(ps.n_scenes == 4 and ps.subjects for ps in sets)
    b.restore(a.state())
    assert ids(b.next(1)) == ["train-0-3"]


def test_long_stories_bring_each_character_back_at_least_five_scenes_later():
    sampler = PromptSampler(seed=2, n_scenes=16, cast_size=8, long=True)
    drawn = sampler.next(6)
    for ps in drawn:
        last: dict[str, int] = {}
        for s, subject in enumerate(ps.subjects or ()):
            assert subject not in last or s - last[subject] >= 5, (ps.id, subject, s)
            last[subject] = s
        assert len(last) == 8
    again = PromptSampler(seed=2, n_scenes=16, cast_size=8, long=True)
    again.restore(sampler.state() | {"position": 3})
    assert again.next(3) == drawn[3:]  # a position is all a resume needs, as for the default stories
