"""Baseline strategies on a hand-built selection state over a rendered (ground-truth) video."""

from dataclasses import replace

import numpy as np
import pytest

from inflvg.config import WorldConfig
from inflvg.context import STRATEGIES, make_strategy
from inflvg.context.base import SelectionState
from inflvg.generator.contexts import subject_tokens
from inflvg.prompts import PromptSet, load_prompts
from inflvg.protocol import Pool
from inflvg.world import prompt_set_of, render_story, sample_story

N_TOK = 16  # long-term tokens per 32x32 frame (8x8 pixels each)


def pool_of(frames: np.ndarray, fps: int, grid=(4, 4)) -> Pool:
    n = grid[0] * grid[1]
    tok = np.tile(np.arange(n), len(frames))
    return Pool(None, np.repeat(frames, n), np.repeat(frames, n) // fps, tok // grid[1], tok % grid[1], grid)


def state_at(scene: int, seed: int = 11, k: int = 16, ps: PromptSet | None = None) -> tuple[SelectionState, object, object]:
    world = WorldConfig()
    story = sample_story(seed, "heldout", world.n_scenes, world.cast_size)
    video = render_story(story, world)
    fps, window = world.frames_per_scene, 2
    ps = ps or prompt_set_of(story, f"heldout-{seed}")
    st = SelectionState(scene, [ps], fps, k, pool_of(np.arange(1, scene * fps - window), fps), video.frames[None, : scene * fps],
                        np.random.default_rng(0))  # fmt: skip
    return st, story, video


def returning_scene(story) -> int:
    return next(i for i, sc in enumerate(story.scenes) if i > 2 and not sc.first_appearance)


def scene_after_two_visits() -> tuple[int, int]:
    """(seed, scene) of a held-out story whose subject already had two scenes of its own."""
    for seed in range(200):
        story = sample_story(seed, "heldout", 8, 4)
        for i, sc in enumerate(story.scenes):
            if sum(story.scenes[j].character == sc.character for j in range(i)) >= 2:
                return seed, i
    raise AssertionError("no such story in 200 seeds")


def test_oracle_takes_only_the_referenced_characters_tokens_from_its_first_scene_opening_first():
    seed, scene = scene_after_two_visits()
    st, story, video = state_at(scene, seed=seed, k=64)
    sel = make_strategy("oracle").select(st)[0]
    chosen = sel[sel >= 0]
    frames, toks = st.pool.frame[chosen], st.pool.row[chosen] * 4 + st.pool.col[chosen]
    truth = subject_tokens(video.masks, 8)
    subject = story.scenes[scene].character
    first = next(i for i, sc in enumerate(story.scenes) if sc.character == subject)
    shown = [(f, j) for f in range(first * 4, first * 4 + 4) for j in np.flatnonzero(truth[f])]
    assert len(chosen) > 0 and all(video.character[f] == subject and truth[f, j] for f, j in zip(frames, toks, strict=True))
    assert set(frames) <= set(range(first * 4, first * 4 + 4)) and frames[0] == first * 4  # its first scene, opening first
    assert (np.diff(frames) >= 0).all() and len(chosen) >= len(shown) - 4  # time order; nearly every token that shows it
    assert not (make_strategy("oracle").select(state_at(first, seed=seed)[0])[0] >= 0).any()  # a first appearance: nothing yet


def test_far_takes_the_newest_tokens_and_random_distinct_ones():
    st, _, _ = state_at(5)
    far = make_strategy("far").select(st)[0]
    assert set(st.pool.frame[far]) == {st.pool.frame.max()}
    rnd = make_strategy("random").select(st)[0]
    assert len(set(rnd.tolist())) == st.budget_k and (rnd < st.pool_size).all() and (rnd >= 0).all()


def test_small_pool_is_padded_and_windows_select_nothing():
    st, _, _ = state_at(1)  # pool of frames 1..1: 16 tokens
    assert (make_strategy("random").select(st)[0] >= 0).sum() == min(16, st.pool_size)
    for name in ("window", "sink_window"):
        assert make_strategy(name).select(st).shape == (1, 0)


def test_prompt_match_takes_whole_newest_frames_of_scenes_naming_the_subject():
    _, story, _ = state_at(1)
    scene = returning_scene(story)
    st, _, _ = state_at(scene, k=24)  # one and a half frames' worth of tokens
    sel = make_strategy("prompt_match").select(st)[0]
    frames = st.pool.frame[sel[sel >= 0]]
    subject, fps = story.scenes[scene].character, st.frames_per_scene
    named = [f for f in np.unique(st.pool.frame) if story.scenes[f // fps].character == subject]
    assert len(frames) == min(24, N_TOK * len(named))
    assert len(named) >= 2 and frames.tolist() == [named[-1]] * N_TOK + [named[-2]] * 8  # newest frame whole, then the next
    first = next(i for i, sc in enumerate(story.scenes) if i > 1 and sc.first_appearance)  # nothing named it before
    st, _, _ = state_at(first)
    assert (make_strategy("prompt_match").select(st) == -1).all()


def test_prompt_match_without_tags_reads_the_subject_off_the_text():
    """The same picks with StoryWorld's parsed tags and without any tags (subject words from the text)."""
    _, story, _ = state_at(1)
    scene = returning_scene(story)
    tagged, _, _ = state_at(scene, k=24)
    untagged, _, _ = state_at(scene, k=24, ps=replace(tagged.prompt_sets[0], subjects=None))
    assert np.array_equal(make_strategy("prompt_match").select(tagged), make_strategy("prompt_match").select(untagged))


def test_prompt_match_on_free_text_ignores_shared_boilerplate():
    """Every InfLVG prompt ends ", face the camera": only the scenes of the named subject count."""
    ps = load_prompts("tests/data/free_text.jsonl")[0]  # retriever 0, cat 1, retriever 2, fisherman 3, cat 4, retriever 5
    fps = 4
    st = SelectionState(5, [ps], fps, 128, pool_of(np.arange(1, 5 * fps - 2), fps), np.zeros((1, 20, 32, 32, 3), np.uint8),
                        np.random.default_rng(0))  # fmt: skip
    sel = make_strategy("prompt_match").select(st)[0]
    assert set(st.pool.scene[sel[sel >= 0]]) == {0, 2}
    st.scene = 3  # the fisherman appears first: nothing to recall
    assert (make_strategy("prompt_match").select(st) == -1).all()


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_only_the_oracle_needs_ground_truth_and_refuses_free_text(name):
    free = load_prompts("tests/data/free_text.jsonl")[:2]
    strategy = make_strategy(name)
    assert strategy.needs_ground_truth == (name == "oracle")
    if name == "oracle":
        with pytest.raises(ValueError, match="'oracle' reads StoryWorld's ground truth, and prompt set 'free_text-0' has none"):
            strategy.check(free)
        strategy.check([prompt_set_of(sample_story(0, "heldout", 8, 4), "s")])  # the grammar carries its ground truth
    else:
        strategy.check(free)
