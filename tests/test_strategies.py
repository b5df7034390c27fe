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


def scene_after_two_visits() -> tuple[int, int]:
    """(seed, scene) of a held-out story whose subject already had two scenes of its own."""
    for seed in range(200):
        story = sample_story(seed, "heldout", 8, 4)
        for i, sc in enumerate(story.scenes):
            if sum(story.scenes[j].character == sc.character for j in range(i)) >= 2:
                return seed, i
    raise AssertionError("no such story in 200 seeds")


def test_oracle_takes_only_the_referenced_characters_tokens_scene_openings_first():
    seed, scene = scene_after_two_visits()
    st, story, video = state_at(scene, seed=seed, k=64)
    sel = make_strategy("oracle").select(st)[0]
    chosen = sel[sel >= 0]
    frames, toks = st.pool_frames[chosen], st.pool_tokens[chosen]
    truth = subject_tokens(video.masks, 8)
    subject = story.scenes[scene].character
    assert len(chosen) > 0 and all(video.character[f] == subject and truth[f, j] for f, j in zip(frames, toks))
    opens = frames % 4 == 0
    n_open = int(opens.sum())
    assert len(set(frames[:n_open])) == 2 and opens[:n_open].all() and not opens[n_open:].any()  # openings first
    assert (np.diff(frames[:n_open]) <= 0).all() and (np.diff(frames[n_open:]) <= 0).all()  # each part newest first


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
