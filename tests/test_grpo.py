"""GRPO math against values computed by hand (the numbers are written out in each test)."""

import math

import numpy as np
import pytest
import torch

from inflvg.grpo import (
    advantage_stats,
    clipped_objective,
    credit_transitions,
    group_advantages,
    grpo_loss,
    kl_k3,
    per_transition_credit,
    stack_scene_rewards,
)
from inflvg.rollout import Rollout, Transition

# rewards [1, 2, 3, 4]: mean 2.5, population variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25,
# std sqrt(1.25) = 1.1180340; advantages (r - 2.5) / 1.1180340
HAND_1234 = [-1.3416408, -0.4472136, 0.4472136, 1.3416408]


def test_group_advantages_hand_values_population_std():
    adv, excluded = group_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0]), eps=0.0)
    assert torch.allclose(adv, torch.tensor(HAND_1234), atol=1e-6)
    assert not excluded.any()
    adv_eps, _ = group_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0]), eps=0.1)
    assert torch.allclose(adv_eps, torch.tensor([-1.5, -0.5, 0.5, 1.5]) / (math.sqrt(1.25) + 0.1), atol=1e-6)


def test_zero_variance_group_gets_zero_advantage_and_is_counted():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0], [0.3, 0.3, 0.3, 0.3]])
    adv, excluded = group_advantages(rewards, eps=0.0)
    assert torch.allclose(adv[0], torch.tensor(HAND_1234), atol=1e-6)
    assert (adv[1:] == 0).all() and excluded[1:].all() and not excluded[0].any()
    stats = advantage_stats(rewards, excluded)
    assert stats["zero_variance_groups"] == 2 and stats["groups"] == 3 and stats["masked_rewards"] == 0


def test_nan_rewards_are_masked_out_of_the_statistics():
    # valid [1, 3, 5]: mean 3, population variance (4 + 0 + 4) / 3 = 8/3, std 1.6329932
    rewards = torch.tensor([[1.0, float("nan"), 3.0, 5.0], [float("nan")] * 4])
    adv, excluded = group_advantages(rewards, eps=0.0)
    assert torch.allclose(adv[0], torch.tensor([-1.2247449, 0.0, 0.0, 1.2247449]), atol=1e-6)
    assert excluded.tolist() == [[False, True, False, False], [True] * 4]
    assert not torch.isnan(adv).any()
    stats = advantage_stats(rewards, excluded)
    assert stats["masked_rewards"] == 5 and stats["zero_variance_groups"] == 0


def _clip_case():
    # ratios 1.5, 0.5, 1.1, 0.7 with advantages 1, 1, -1, -1 and eps 0.2:
    # min(r A, clip(r) A) = min(1.5, 1.2)=1.2 (clipped), min(0.5, 0.8)=0.5, min(-1.1, -1.1)=-1.1,
    # min(-0.7, -0.8)=-0.8 (clipped)  ->  loss = -(1.2 + 0.5 - 1.1 - 0.8) / 4 = 0.05
    new = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.7])).requires_grad_()
    return new, torch.zeros(4), torch.tensor([1.0, 1.0, -1.0, -1.0])


def test_clipped_objective_hand_values_and_gradient():
    new, old, adv = _clip_case()
    loss, stats = clipped_objective(new, old, adv, clip_eps=0.2)
    assert loss.item() == pytest.approx(0.05, abs=1e-6)
    assert stats["clip_fraction"] == pytest.approx(0.5) and stats["ratio_mean"] == pytest.approx(0.95, abs=1e-6)
    loss.backward()
    # d loss / d logp = -r A / 4 where unclipped, 0 where clipped
    assert torch.allclose(new.grad, torch.tensor([0.0, -0.125, 0.275, 0.0]), atol=1e-6)


def test_clipped_objective_ignores_invalid_entries_even_if_infinite():
    new, old, adv = _clip_case()
    new = torch.cat([new, torch.tensor([float("-inf")])])
    old, adv = torch.cat([old, torch.zeros(1)]), torch.cat([adv, torch.ones(1)])
    valid = torch.tensor([False, True, True, True, False])
    loss, stats = clipped_objective(new, old, adv, 0.2, valid)
    assert loss.item() == pytest.approx(-(0.5 - 1.1 - 0.8) / 3, abs=1e-6)
    assert stats["clip_fraction"] == pytest.approx(1 / 3)


def test_kl_k3_hand_values():
    # d = ref - new = [0, ln 2, -ln 2]: k3 = [0, 2 - ln2 - 1, 0.5 + ln2 - 1]
    new = torch.tensor([0.0, 0.0, math.log(2)])
    ref = torch.tensor([0.0, math.log(2), 0.0])
    assert torch.allclose(kl_k3(new, ref), torch.tensor([0.0, 0.30685282, 0.19314718]), atol=1e-6)


def test_grpo_loss_adds_beta_times_kl_and_needs_a_reference():
    new, old, adv = _clip_case()
    ref = torch.log(torch.tensor([1.5, 1.0, 1.1, 0.7]))  # differs from new only in entry 2: d = ln 2
    loss, stats = grpo_loss(new, old, adv, logp_ref=ref, beta=0.4)
    assert stats["kl"] == pytest.approx((2 - math.log(2) - 1) / 4, abs=1e-6)
    assert loss.item() == pytest.approx(0.05 + 0.4 * stats["kl"], abs=1e-6)
    with pytest.raises(ValueError, match="logp_ref"):
        grpo_loss(new, old, adv, beta=0.1)


def test_per_transition_credit_normalises_each_scene_across_the_group():
    rewards = torch.zeros(2, 4, 3)
    rewards[0, :, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    rewards[0, :, 1] = 7.0  # a scene every rollout scored alike: no signal
    rewards[0, :, 2] = torch.tensor([4.0, 3.0, 2.0, 1.0])
    rewards[1] = torch.arange(12.0).view(4, 3)  # columns [0,3,6,9], [1,4,7,10], [2,5,8,11]
    adv, excluded = per_transition_credit(rewards, eps=0.0)
    assert adv.shape == excluded.shape == (2, 4, 3)
    assert torch.allclose(adv[0, :, 0], torch.tensor(HAND_1234), atol=1e-6)
    assert torch.allclose(adv[0, :, 2], -torch.tensor(HAND_1234), atol=1e-6)
    assert (adv[0, :, 1] == 0).all() and excluded[0, :, 1].all()
    assert torch.allclose(adv[1], torch.tensor(HAND_1234)[:, None].expand(4, 3), atol=1e-6)


def test_batch_scale_divides_every_group_by_one_std():
    # group a: deviations -1.5 -0.5 0.5 1.5; group b (a tiny, noise-like spread): -0.015 ... 0.015
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 0.51, 0.52, 0.53], [7.0, 7.0, 7.0, 7.0]])
    adv, excluded = group_advantages(rewards, eps=0.0, scale="batch")
    # std_B over the 8 kept deviations: sqrt((2.25 + 0.25 + 0.25 + 2.25 + 2.25e-4 + 0.25e-4 + 0.25e-4 + 2.25e-4) / 8)
    std_b = math.sqrt((5.0 + 5.0e-4) / 8)
    assert torch.allclose(adv[0], torch.tensor([-1.5, -0.5, 0.5, 1.5]) / std_b, atol=1e-5)
    assert torch.allclose(adv[1], torch.tensor([-0.015, -0.005, 0.005, 0.015]) / std_b, atol=1e-5)  # stays small
    assert (adv[2] == 0).all() and excluded[2].all() and not excluded[:2].any()
    grouped, _ = group_advantages(rewards, eps=0.0)
    assert torch.allclose(grouped[1], grouped[0], atol=1e-4)  # per-group std: the noise looks like signal
    with pytest.raises(ValueError, match="advantage scale"):
        group_advantages(rewards, scale="global")


def _rollout(group: int, index: int, rewards: list, scenes: list) -> Rollout:
    zeros = np.zeros((2, 3), np.float32)
    t = [Transition(s, zeros, zeros, np.ones(2, bool), np.zeros(1, np.int64), 0.0) for s in scenes]
    return Rollout("story", group, index, 0, 0, index, np.asarray(rewards, np.float32), transitions=t)


def test_credit_transitions_maps_each_transition_to_its_scene_advantage():
    groups = [[_rollout(0, i, [0.0, r], [1]) for i, r in enumerate([1.0, 2.0, 3.0, 4.0])]]
    transitions, adv, valid = credit_transitions(groups, eps=0.0)
    assert len(transitions) == 4 and valid.all()
    assert torch.allclose(adv, torch.tensor(HAND_1234), atol=1e-6)


def test_groups_of_different_scene_counts_are_credited_as_if_alone():
    """A prompt file may mix scene counts: a 2-scene group beside a 3-scene one gets the same
    advantages as on its own, and the padding counts as neither a reward nor a masked one."""
    short = [_rollout(0, i, [0.0, r], [1]) for i, r in enumerate([1.0, 2.0, 3.0, 4.0])]
    long = [_rollout(1, i, [0.0, 5.0, r], [1, 2]) for i, r in enumerate([4.0, 3.0, 2.0, 1.0])]
    rewards, real = stack_scene_rewards([short, long])
    assert rewards.shape == (2, 4, 3) and real[0, :, 2].logical_not().all() and real[1].all()
    transitions, adv, valid = credit_transitions([short, long], eps=0.0)
    assert len(transitions) == 12 and valid.tolist() == [True] * 4 + [False, True] * 4  # scene 1 of "long": zero variance
    assert torch.allclose(adv[:4], torch.tensor(HAND_1234), atol=1e-6)
    assert torch.allclose(adv[5::2], -torch.tensor(HAND_1234), atol=1e-6)
