"""Baseline strategies on a hand-built selection state over a rendered (ground-truth) video."""

import numpy as np

from inflvg.config import WorldConfig
from inflvg.context import make_strategy
from inflvg.context.base import SelectionState
from inflvg.generator.contexts import subject_tokens
from inflvg.world import render_story, sample_story

N_TOK = 16  # long-term tokens per 32x32 frame (8x8 pixels each)


def state_at(scene: int, seed: int = 11, k: int = 16) -> tuple[SelectionState, object, object]:
    world = WorldConfig()
    story = sample_story(seed, "heldout", world.n_scenes, world.cast_size)
    video = render_story(story, world)
    fps, window = world.frames_per_scene, 2
    pool = np.arange(1, scene * fps - window)
    st = SelectionState(
        scene=scene, stories=[story], frames_per_scene=fps, budget_k=k,
        pool_frames=np.repeat(pool, N_TOK), pool_tokens=np.tile(np.arange(N_TOK), len(pool)),
        features=None, frames=video.frames[None, : scene * fps], prompts=[story.prompt(scene)],
        rng=np.random.default_rng(0),
    )  # fmt: skip
    return st, story, video


def returning_scene(story) -> int:
    return next(i for i, sc in enumerate(story.scenes) if i > 2 and not sc.first_appearance)


def test_oracle_takes_only_the_referenced_characters_tokens_newest_first():
    st0, story, video = state_at(1)
    st, _, _ = state_at(returning_scene(story))
    sel = make_strategy("oracle").select(st)[0]
    chosen = sel[sel >= 0]
    assert len(chosen) > 0
    frames, toks = st.pool_frames[chosen], st.pool_tokens[chosen]
    truth = subject_tokens(video.masks, 8)
    subject = story.scenes[st.scene].character
    assert all(video.character[f] == subject and truth[f, j] for f, j in zip(frames, toks))
    assert (np.diff(frames) <= 0).all()  # newest frames first


def test_far_takes_the_newest_tokens_and_random_distinct_ones():
    st, story, _ = state_at(5)
    far = make_strategy("far").select(st)[0]
    assert set(st.pool_frames[far]) == {st.pool_frames.max()}
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
    frames = st.pool_frames[sel[sel >= 0]]
    subject, fps = story.scenes[scene].character, st.frames_per_scene
    named = [f for f in np.unique(st.pool_frames) if story.scenes[f // fps].character == subject]
    assert len(frames) == min(24, N_TOK * len(named))
    assert len(named) >= 2 and frames.tolist() == [named[-1]] * N_TOK + [named[-2]] * 8  # newest frame whole, then the next
    first = next(i for i, sc in enumerate(story.scenes) if i > 1 and sc.first_appearance)  # nothing named it before
    st, _, _ = state_at(first)
    assert (make_strategy("prompt_match").select(st) == -1).all()
