"""Test-time refinement: real generator (tiny, random), real shipped reward models, real GRPO steps
(the learner's update itself: tests/test_learner.py)."""

import math

import numpy as np
import pytest
import torch

from inflvg.context.baselines import make_strategy
from inflvg.generate import generate
from inflvg.policy import PolicyConfig, SelectionPolicy
from inflvg.refine import RefineConfig, Refiner
from inflvg.world import prompt_set_of, sample_story
from reward_actors.videos import VideoScorer


@pytest.fixture(scope="module")
def refiner(lively_gen):
    return Refiner(lively_gen, VideoScorer(), RefineConfig(group_size=4, lr=1e-2))


@pytest.fixture(scope="module")
def story(lively):
    world = lively[1]
    return next(s for s in (sample_story(i, "heldout", 4, world.cast_size) for i in range(50)) if s.scenes[3].character == s.scenes[1].character)


def test_score_gives_every_scene_each_family_and_masks_first_appearances(refiner, story, lively_gen):
    frames = generate(lively_gen, [prompt_set_of(story, "s")], make_strategy("random"), seed=1).frames[0]
    scores = refiner.score(frames, prompt_set_of(story, "s"))
    assert len(scores) == len(story.scenes)
    for s, row in enumerate(scores):
        assert set(row) == {"alignment", "identity", "artifacts", "total"}
        first = all(story.scenes[i].character != story.scenes[s].character for i in range(s))
        assert math.isnan(row["identity"]) == first  # no history to compare with: masked, not made up
        assert 0.0 <= row["total"] <= 1.0


def test_refinement_updates_a_private_copy_and_repeats_exactly(refiner, story):
    torch.manual_seed(0)
    start = SelectionPolicy(PolicyConfig(d_feature=32, d_prompt=32, d_model=16, n_heads=2, hidden=32))
    before = {k: v.clone() for k, v in start.state_dict().items()}
    a = refiner.refine(start, prompt_set_of(story, "s"), steps=2, seed=3)
    b = refiner.refine(start, prompt_set_of(story, "s"), steps=2, seed=3)
    assert all(torch.equal(v, before[k]) for k, v in start.state_dict().items())  # the caller's policy is untouched
    moved = max((a.policy.state_dict()[k] - v).abs().max().item() for k, v in before.items())
    assert moved > 1e-4
    assert len(a.curve) == 2 and a.curve == b.curve and np.isfinite(a.curve).all()
    assert all(r.shape == (4, len(story.scenes)) for r in a.rewards)
    assert np.allclose(a.curve, [np.nanmean(r) for r in a.rewards])
    assert all(torch.equal(v, b.policy.state_dict()[k]) for k, v in a.policy.state_dict().items())


def test_refinement_from_scratch_and_bad_steps(refiner, story):
    policy_cfg = PolicyConfig(d_feature=32, d_prompt=32, d_model=16, n_heads=2, hidden=32)
    fresh = refiner.refine(None, prompt_set_of(story, "s"), steps=1, seed=0, policy_cfg=policy_cfg)
    assert len(fresh.curve) == 1
    assert refiner.refine(None, prompt_set_of(story, "s"), steps=0, seed=0).curve == []
    with pytest.raises(ValueError, match="steps"):
        refiner.refine(None, prompt_set_of(story, "s"), steps=-1)
    with pytest.raises(ValueError, match="group_size"):
        RefineConfig(group_size=1)


def test_refine_bench_summary_finds_the_first_step_reaching_the_fresh_reward():
    from cluster.refine_bench import markdown, summary

    c = {"fresh": np.array([[0.1, 0.2, 0.5], [0.3, 0.4, 0.5]]), "amortised": np.array([[0.4, 0.6], [0.4, 0.5]])}
    s = summary(c, fresh_steps=2)  # fresh after 2 steps: 0.5; amortised mean curve 0.4, 0.55
    assert s["fresh_reward_after_steps"] == pytest.approx(0.5) and s["amortised_steps_to_reach"] == 1
    assert s["amortised_curve"] == [0.4, 0.55] and "after 1 steps" in markdown(s)
    assert summary({"fresh": c["fresh"], "amortised": c["amortised"] - 0.2}, 2)["amortised_steps_to_reach"] is None
