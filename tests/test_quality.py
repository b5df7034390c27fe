"""The benchmark's per-video scores on ground-truth renders, and after a returning scene is spoiled."""

import json
from dataclasses import replace

import numpy as np
import pytest

from inflvg.bench.quality import score_video
from inflvg.config import WorldConfig
from inflvg.world import prompt_set_of, render_story, sample_story


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
    ps = prompt_set_of(story, "s")
    truth = score_video(ps, story, frames, fps)
    assert (truth.alignment, truth.character, truth.returns, truth.identity) == (1.0, 1.0, 1.0, 1.0)

    back = returns[0]
    other = next(i for i, sc in enumerate(story.scenes) if sc.character != story.scenes[back].character)
    spoiled = frames.copy()
    spoiled[back * fps : (back + 1) * fps] = frames[other * fps : (other + 1) * fps]
    s = score_video(ps, story, spoiled, fps)
    assert s.returns == (len(returns) - 1) / len(returns)
    assert s.character == (len(story.scenes) - 1) / len(story.scenes)
    assert s.identity < 1.0

    # without ground truth (the prompts as free text, no tags): identity by the subject the text names
    free = replace(ps, subjects=None)
    clean, bad = score_video(free, None, frames, fps), score_video(free, None, spoiled, fps)
    assert clean.identity == 1.0 and bad.identity < 1.0 and clean.artifacts > 0.5
    assert np.isnan(clean.alignment) and np.isnan(clean.character) and clean.combined == (clean.identity + clean.artifacts) / 2


def test_a_video_without_returns_has_no_returns_score():
    world = WorldConfig(n_scenes=2)
    story = sample_story(0, "heldout", world.n_scenes, world.cast_size)
    s = score_video(prompt_set_of(story, "s"), story, render_story(story, world).frames, world.frames_per_scene)
    assert np.isnan(s.returns) and np.isnan(s.identity) and s.character == 1.0


def test_scores_scene_by_scene_agree_with_the_video_means_and_drift_pads_shorter_videos():
    from inflvg.bench.quality import METRICS, drift, per_scene_table

    world = WorldConfig()
    fps = world.frames_per_scene
    story, returns = _story_with_a_return(world)
    frames = render_story(story, world).frames
    back = returns[0]
    other = next(i for i, sc in enumerate(story.scenes) if sc.character != story.scenes[back].character)
    spoiled = frames.copy()
    spoiled[back * fps : (back + 1) * fps] = frames[other * fps : (other + 1) * fps]
    s = score_video(prompt_set_of(story, "s"), story, spoiled, fps)
    scene = s.by_scene
    assert all(len(scene[m]) == len(story.scenes) for m in METRICS)
    assert list(np.flatnonzero(~np.isnan(scene["returns"]))) == returns == list(np.flatnonzero(~np.isnan(scene["identity"])))
    assert scene["returns"][back] == 0.0 and scene["character"][back] == 0.0 and scene["identity"][back] < 1.0
    for m in ("alignment", "identity", "artifacts", "character", "returns"):
        assert np.nanmean(scene[m]) == getattr(s, m)
    assert scene["combined"][0] == (scene["alignment"][0] + scene["artifacts"][0]) / 2  # no identity on a first appearance

    short = sample_story(1, "heldout", 3, world.cast_size)
    table = per_scene_table([s, score_video(prompt_set_of(short, "t"), short, render_story(short, world).frames, fps)])
    assert table["alignment"].shape == (2, len(story.scenes)) and np.isnan(table["alignment"][1, 3:]).all()
    curves = drift(table)
    for m in METRICS:
        assert len(curves[m]) == len(curves["ci95"][m]) == len(story.scenes)
        for mean, (lo, hi) in zip(curves[m], curves["ci95"][m], strict=True):
            assert (mean is None and lo is None) or lo <= mean <= hi
    assert curves["identity"][0] is None and curves["alignment"][0] == 1.0


def test_returns_among4_reads_every_cast_size_with_the_same_number_of_choices():
    """A reading that agrees 4/5 with the subject and 4/5 with one other member (they differ in one
    colour): the strict reader picks the lower index; among 4 the tie is split (0.5). With a cast
    of 8, that member is among the 3 drawn in 3/7 of scenes: 1 - 3/7 * 0.5 = 0.786 on average."""
    from inflvg.bench.quality import right_among
    from inflvg.world.readers import SubjectReading, which_character
    from inflvg.world.render import Identity

    look_alike, subject = Identity("circle", "red", "blue", "plain", "small"), Identity("circle", "green", "blue", "plain", "small")
    far = [Identity(shape, "yellow", c2, pattern, "large") for shape, c2, pattern in
           [("square", "red", "striped"), ("triangle", "green", "dotted"), ("diamond", "red", "checked"),
            ("cross", "green", "striped"), ("square", "red", "dotted"), ("triangle", "green", "checked")]]  # fmt: skip
    reading = SubjectReading("circle", "cyan", "blue", "plain", "small", pixels=100)  # colour1 drawn as neither one
    cast4 = (look_alike, far[0], subject, far[1])
    assert which_character(reading, cast4) == 0 and right_among(reading, cast4, 2, scene=5) == 0.5
    exact = SubjectReading(*subject.attributes(), pixels=100)
    assert right_among(exact, cast4, 2, scene=5) == 1.0 and right_among(None, cast4, 2, scene=5) == 0.0
    cast8 = (look_alike, *far[:4], subject, *far[4:])
    scores = [right_among(reading, cast8, 5, scene=i) for i in range(400)]
    assert set(scores) == {0.5, 1.0} and 0.74 < np.mean(scores) < 0.83
    assert right_among(reading, cast8, 5, scene=7) == right_among(reading, cast8, 5, scene=7)  # the same draw for every strategy


def test_identity_drift_pools_returns_before_and_after_scene_9():
    """Hand-computed: video A returns at scenes 3 (1.0), 5 (0.5), 10 (0.5); video B at 4 (1.0), 12
    (0.25), 13 (0.75). Scenes 3-8 pool to (1 + 0.5 + 1) / 3, scenes >= 9 to (0.5 + 0.25 + 0.75) / 3."""
    from inflvg.bench.quality import identity_drift

    identity = np.full((2, 14), np.nan)
    identity[0, [3, 5, 10]] = [1.0, 0.5, 0.5]
    identity[1, [4, 12, 13]] = [1.0, 0.25, 0.75]
    d = identity_drift(identity)
    assert d is not None and d["early"] == round(2.5 / 3, 5) and d["late"] == 0.5 and d["ratio"] == 0.6
    lo, hi = d["ratio_ci95"]
    assert lo <= 0.6 <= hi
    assert identity_drift(identity[:, :9]) is None  # no scene 9: nothing to compare


def test_compare_takes_the_paired_difference_of_two_runs_and_refuses_other_videos(tmp_path, capsys):
    """Hand-computed: A's combined per video [0.9, 0.8, 0.7], B's [0.8, 0.8, 0.6] -> A - B = +0.067 on average."""
    from inflvg.bench.compare import main, paired_difference

    def run(combined, videos=3):
        per_video = {m: [0.5] * videos for m in ("alignment", "identity", "artifacts", "character", "returns")}  # no returns_among4: an older run
        return {"config": {"split": "heldout", "seed": 0, "videos": videos}, "per_video": {"learned": per_video | {"combined": combined}}}

    a, b = run([0.9, 0.8, 0.7]), run([0.8, 0.8, float("nan")])
    d = paired_difference(a, b, "learned")
    assert d["combined"]["mean"] == pytest.approx(0.05) and d["combined"]["a"] == pytest.approx(0.85)  # the NaN pair left out
    assert d["identity"] == {"a": 0.5, "b": 0.5, "mean": 0.0, "ci95": [0.0, 0.0]}
    with pytest.raises(ValueError, match=r"config \{'videos': \(3, 4\)\} differ"):
        paired_difference(a, run([0.1] * 4, videos=4), "learned")
    assert paired_difference(a | {"config": a["config"] | {"generator": "storyworld"}}, b | {"config": b["config"] | {"backend": "storyworld"}},
                             "learned")["combined"]["mean"] == pytest.approx(0.05)  # an earlier version's name for the same setting  # fmt: skip
    other_weights = paired_difference(a | {"config": a["config"] | {"weights": "long.pt"}}, b | {"config": b["config"] | {"weights": "shipped"}},
                                      "learned")  # fmt: skip
    assert other_weights["combined"]["mean"] == pytest.approx(0.05)  # two generators on the same prompt sets and noise
    with pytest.raises(ValueError, match="no strategy 'oracle'"):
        paired_difference(a, b, "oracle")
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for p, r in zip(paths, (a, run([0.8, 0.8, 0.6])), strict=True):
        p.write_text(json.dumps(r))
    result = main([str(paths[0]), str(paths[1]), "--out", str(tmp_path / "d.json")])
    assert result["difference"]["combined"]["mean"] == pytest.approx(0.2 / 3) and "| combined | 0.800 | 0.733 | +0.067" in capsys.readouterr().out
    assert result["weights"] == ["shipped", "shipped"]
    with pytest.raises(SystemExit):
        main([str(paths[0]), str(tmp_path / "missing.json")])


def test_returns_by_visit_pools_first_second_and_later_returns():
    """Hand-computed: video A's returns at visits 1, 1, 2, 4 read 1, 0, 1, 0; video B's at visits 1, 3
    read 1, 1. First returns pool to 2/3, second to 1/1, third and later to 1/2."""
    from inflvg.bench.quality import by_visit

    returns = np.array([[np.nan, 1.0, 0.0, 1.0, 0.0], [np.nan, 1.0, 1.0, np.nan, np.nan]])
    visit = np.array([[0, 1, 1, 2, 4], [0, 1, 3, 0, 0]], float)
    v = by_visit(returns, visit)
    assert (v["1"]["mean"], v["1"]["scenes"]) == (round(2 / 3, 5), 3) and (v["2"]["mean"], v["2"]["scenes"]) == (1.0, 1)
    assert (v["3+"]["mean"], v["3+"]["scenes"]) == (0.5, 2)
    assert v["1"]["ci95"][0] <= 2 / 3 <= v["1"]["ci95"][1]
    assert by_visit(returns[:, :2], visit[:, :2])["2"] is None  # no second return: no figure


def test_every_scene_knows_its_subjects_earlier_scenes_with_or_without_ground_truth():
    world = WorldConfig()
    story = sample_story(3, "heldout", 12, world.cast_size)
    frames = render_story(story, world).frames
    want = [sum(e.character == sc.character for e in story.scenes[:i]) for i, sc in enumerate(story.scenes)]
    ps = prompt_set_of(story, "s")
    assert list(score_video(ps, story, frames, world.frames_per_scene).by_scene["visit"]) == want
    assert list(score_video(ps, None, frames, world.frames_per_scene).by_scene["visit"]) == want  # from the prompts alone
    assert want.count(0) == len({sc.character for sc in story.scenes}) and max(want) >= 2
