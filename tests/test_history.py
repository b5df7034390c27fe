"""The identity reward's history, chosen from the prompts alone (``reward_actors.history``): the
earlier scenes about the subject the scene's prompt names, by tag or by the prompt's subject
words, never from the world's ground truth and never "whichever earlier scene looks closest"."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from inflvg.config import WorldConfig
from inflvg.prompts import load_prompts
from inflvg.world import prompt_set_of, render_story, sample_story
from inflvg.world.story import Scene
from inflvg.world.story import subject_history as ground_truth_history
from reward_actors.history import named_history, video_scene_batch
from reward_actors.identity import IdentityScorer
from reward_actors.types import SceneBatch

FREE_TEXT = Path(__file__).parent / "data" / "free_text.jsonl"
# per row of free_text.jsonl, which subject each scene is about (read by a person, not by the rule)
FREE_TEXT_SUBJECTS = [[0, 1, 0, 2, 1, 0]] * 7 + [[0, 1, 0, 2, 0, 2]]
WORLD = WorldConfig(n_scenes=8, cast_size=4)
FPS = WORLD.frames_per_scene


def numbered_video(n_scenes: int, fps: int = FPS) -> np.ndarray:
    """(n_scenes * fps, 2, 2, 3) uint8 frames whose value is their scene's index, so that a
    history's frames say which scenes it was made of."""
    return np.repeat(np.arange(n_scenes, dtype=np.uint8), fps)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)


def scenes_in(history: np.ndarray | None, fps: int = FPS) -> list[int]:
    return [] if history is None else [int(f[0, 0, 0]) for f in history[::fps]]


@pytest.fixture(scope="module")
def scorer():
    return IdentityScorer(num_threads=1)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tagged", [True, False])
def test_storyworld_history_is_exactly_the_named_characters_earlier_scenes(seed, tagged):
    story = sample_story(seed, "heldout", WORLD.n_scenes, WORLD.cast_size)
    ps = prompt_set_of(story, "x")
    ps = ps if tagged else dataclasses.replace(ps, subjects=None)  # untagged: the subject words are read off the text
    video = render_story(story, WORLD).frames
    batch = video_scene_batch([video, video[::-1].copy()], ps, FPS)
    assert len(batch) == 2 * WORLD.n_scenes and batch.prompts[: WORLD.n_scenes] == story.prompts()
    for v, frames in enumerate([video, video[::-1]]):
        for s, sc in enumerate(story.scenes):
            expected = ground_truth_history(story, frames, FPS, s)
            got = batch.history[v * WORLD.n_scenes + s]
            assert (got is None) == sc.first_appearance == (expected is None)
            if expected is not None:
                np.testing.assert_array_equal(got, expected)
    numbered = numbered_video(WORLD.n_scenes)
    for s, sc in enumerate(story.scenes):
        truth = [i for i in range(s) if story.scenes[i].character == sc.character]
        assert scenes_in(named_history(numbered, ps, FPS, s)) == truth


def test_free_text_history_is_the_earlier_scenes_of_the_subject_the_prompt_names():
    prompt_sets = load_prompts(FREE_TEXT)
    assert len(prompt_sets) == len(FREE_TEXT_SUBJECTS) and all(ps.subjects is None for ps in prompt_sets)
    for ps, subjects in zip(prompt_sets, FREE_TEXT_SUBJECTS, strict=True):
        batch = video_scene_batch([numbered_video(ps.n_scenes)], ps, FPS)
        for s, who in enumerate(subjects):
            truth = [i for i in range(s) if subjects[i] == who]
            assert scenes_in(batch.history[s]) == truth, (ps.id, s, ps.scenes[s])
            assert (batch.history[s] is None) == (not truth)


def test_tags_decide_when_a_file_has_them():
    ps = load_prompts(FREE_TEXT)[0]
    # tagged as a person would tag it: the fisherman of scene 3 is tagged like scene 0's subject
    subjects = ("golden retriever", "grey tabby cat", "golden retriever", "golden retriever", None, "golden retriever")
    tagged = dataclasses.replace(ps, subjects=subjects)
    got = [scenes_in(named_history(numbered_video(ps.n_scenes), tagged, FPS, s)) for s in range(ps.n_scenes)]
    assert got == [[], [], [0], [0, 2], [], [0, 2, 3]]  # scene 4 has no tag: no subject, no history


def story_with(order: list[int], seed: int = 3) -> "object":
    """A held-out StoryWorld story whose scenes show the cast in ``order``."""
    base = sample_story(seed, "heldout", len(order), max(order) + 1)
    scenes, seen = [], set()
    for c, sc in zip(order, base.scenes, strict=True):
        scenes.append(Scene(c, sc.background, sc.action, c not in seen))
        seen.add(c)
    return dataclasses.replace(base, scenes=tuple(scenes))


def spoil_and_score(scorer: IdentityScorer, ps, video: np.ndarray, scene: int, other: int) -> tuple[float, float, float]:
    """(score of ``scene`` as generated, score when its frames are another character's scene
    ``other`` copied in, score a "nearest earlier scene" history would give that spoiled scene)."""
    spoiled = video.copy()
    spoiled[scene * FPS : (scene + 1) * FPS] = video[other * FPS : (other + 1) * FPS]
    clean, bad = (video_scene_batch([v], ps, FPS) for v in (video, spoiled))
    np.testing.assert_array_equal(clean.history[scene], bad.history[scene])  # the history does not follow the frames
    nearest = SceneBatch([bad.frames[scene]], [ps.scenes[scene]], [video[other * FPS : (other + 1) * FPS]])
    res = scorer.score(SceneBatch([clean.frames[scene], bad.frames[scene]], [ps.scenes[scene]] * 2, [clean.history[scene]] * 2))
    assert res.valid.all()
    return float(res.scores[0]), float(res.scores[1]), float(scorer.score(nearest).scores[0])


@pytest.mark.parametrize("seed", [0, 2])
def test_untagged_storyworld_reward_prefers_the_named_character_over_the_nearest_earlier_one(scorer, seed):
    story = sample_story(seed, "heldout", WORLD.n_scenes, WORLD.cast_size)
    ps = dataclasses.replace(prompt_set_of(story, "x"), subjects=None)
    video = render_story(story, WORLD).frames
    checked = 0
    for s, sc in enumerate(story.scenes):
        others = [i for i in range(s) if story.scenes[i].character != sc.character]
        if sc.first_appearance or not others:
            continue
        own, spoiled, nearest = spoil_and_score(scorer, ps, video, s, others[-1])  # the latest other character
        assert own > spoiled + 0.2 and nearest > spoiled + 0.2, (s, own, spoiled, nearest)
        checked += 1
    assert checked >= 2


def test_reward_on_a_free_text_file_without_tags(scorer):
    ps = load_prompts(FREE_TEXT)[0]  # retriever, cat, retriever, fisherman, cat, retriever; no tags
    story = story_with(FREE_TEXT_SUBJECTS[0])  # characters drawn in the same order
    video = render_story(story, WorldConfig(n_scenes=ps.n_scenes, cast_size=3)).frames
    res = scorer.score(video_scene_batch([video], ps, FPS))
    first = [0, 1, 3]  # each subject's first appearance: nothing earlier to compare with
    assert [res.reasons[i] for i in first] == ["no history"] * 3 and np.isnan(res.scores[first]).all()
    assert res.valid[[2, 4, 5]].all() and res.scores[[2, 4, 5]].min() > 0.5
    for scene, other in [(5, 4), (5, 3), (4, 3), (2, 1)]:  # the retriever's or the cat's scene showing someone seen earlier
        own, spoiled, nearest = spoil_and_score(scorer, ps, video, scene, other)
        assert own > spoiled + 0.2 and nearest > spoiled + 0.2, (scene, other, own, spoiled, nearest)


def test_each_reward_is_sent_only_the_frames_it_reads_and_scores_the_same():
    """``frames_read``: alignment gets its sampled frames and no history, identity its sampled frames of the
    scene and of the history; the real scorers give the same scores on that as on everything."""
    from reward_actors.alignment import AlignmentScorer
    from reward_actors.config import AlignmentConfig, IdentityConfig
    from reward_actors.history import frames_read

    story = sample_story(3, "heldout", WORLD.n_scenes, WORLD.cast_size)
    batch = video_scene_batch([render_story(story, WORLD).frames], prompt_set_of(story, "x"), FPS)
    identity, alignment = IdentityConfig(frames_new=2, frames_history=3), AlignmentConfig(frames_per_scene=2)
    scorers = {"identity": (identity, IdentityScorer(frames_new=2, frames_history=3, num_threads=1)),
               "alignment": (alignment, AlignmentScorer(frames_per_scene=2))}  # fmt: skip
    size = lambda b: sum(f.nbytes for f in b.frames) + sum(h.nbytes for h in (b.history or []) if h is not None)  # noqa: E731
    for family, (cfg, scorer) in scorers.items():
        sent = frames_read(family, cfg, batch)
        assert size(sent) < size(batch) / 2, family
        assert [len(f) for f in sent.frames] == [2] * len(batch.frames)
        np.testing.assert_allclose(scorer.score(sent).scores, scorer.score(batch).scores, atol=1e-6, err_msg=family)
    assert frames_read("alignment", alignment, batch).history is None
    assert max(len(h) for h in frames_read("identity", identity, batch).history if h is not None) == 3
