"""Hybrid ranks on a real Ray with real DeepSpeed over gloo: rollout replicas that are also
data-parallel learner ranks. Two ranks compute the gradient one rank computes on the same global
batch, hold half its ZeRO-2 optimizer state, step to identical weights that their own rollout
policies act with, and save and restore a checkpoint spread over both, also into a new world."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from inflvg.generator.weights import save_generator
from inflvg.policy import PolicyConfig
from inflvg.world import sample_prompt_set
from learner.config import LearnerConfig
from rollout_workers.config import RolloutConfig

POLICY = PolicyConfig(d_feature=32, d_prompt=32, d_model=16, n_heads=2, hidden=32)
LEARNER = LearnerConfig(policy=POLICY, zero_stage=2, lr=1e-2, minibatch_size=8, epochs=2)
N_SETS, G, NOISE, SELECTION = 4, 3, 5, 6


@pytest.fixture(scope="module")
def rollout_cfg(lively, tmp_path_factory) -> RolloutConfig:
    gen, world, ctx = lively
    path = tmp_path_factory.mktemp("generator") / "generator.pt"
    save_generator(gen, world, ctx, path, meta={"note": "test_hybrid"})
    return RolloutConfig(generator_weights=str(path), group_size=G, num_cpus=0.5)


@pytest.fixture(scope="module")
def groups(ray_local, rollout_cfg):
    from cluster.hybrid import HybridGroup

    one = HybridGroup(rollout_cfg, LEARNER, timeout_s=600)
    two = HybridGroup(replace(rollout_cfg, replicas=2), LEARNER, timeout_s=600)
    return one, two


@pytest.fixture(scope="module")
def prompt_sets(tiny):
    _, world, _ = tiny
    return [sample_prompt_set(300 + i, "train", 3, world.cast_size, f"set-{i}") for i in range(N_SETS)]


def scored(rollouts, step: int = 0):
    """Rewards as the reward actors would fill them in (seeded numbers: the rewards are not under test here)."""
    for r in rollouts:
        rng = np.random.default_rng([step, r.group_id, r.rollout_index])
        r.scene_rewards = rng.normal(size=len(r.prompts)).astype(np.float32)
    return rollouts


def test_two_ranks_compute_the_gradient_of_one_and_hold_half_its_optimizer_state(groups, prompt_sets):
    one, two = groups
    a, b = one.rollout(prompt_sets, NOISE, SELECTION), two.rollout(prompt_sets, NOISE, SELECTION)
    assert [t.chosen.tolist() for r in a for t in r.transitions] == [t.chosen.tolist() for r in b for t in r.transitions]
    assert all(t.features.shape[0] == 0 for r in b for t in r.transitions)  # the features stayed on their ranks
    _, counts, _ = two.shares(scored(b), LEARNER.update)
    assert counts[0] > 0 and counts[1] > 0 and sum(counts) > LEARNER.minibatch_size  # the first minibatch mixes both ranks
    g1, g2 = one.gradients(scored(a), LEARNER.update), two.gradients(b, LEARNER.update)
    diff = max((g1[k] - g2[k]).abs().max().item() for k in g1)
    print(f"max |grad(2 ranks) - grad(1 rank)| = {diff:.3g} over {sum(v.numel() for v in g1.values())} values")
    assert diff <= 1e-6 and max(v.abs().max().item() for v in g1.values()) > 1e-3
    one.update(a), two.update(b)  # AdamW's state exists after the first step
    whole, halves = one.optimizer_state_bytes()[0], two.optimizer_state_bytes()
    print(f"ZeRO-2 optimizer state: one rank {whole} bytes, two ranks {halves} bytes each")
    assert all(h <= 0.5 * whole * 1.02 for h in halves) and sum(halves) >= whole


def test_ranks_step_to_the_same_weights_and_act_with_them(groups, prompt_sets):
    one, two = groups
    for step in (1, 2):
        a = scored(one.rollout(prompt_sets, NOISE + step, SELECTION), step)
        b = scored(two.rollout(prompt_sets, NOISE + step, SELECTION), step)
        m1, m2 = one.update(a), two.update(b)
        assert m1["optimizer_steps"] == m2["optimizer_steps"] == 2 * np.ceil(m1["transitions"] / LEARNER.minibatch_size)
    (v1, w1), ((v2, w2), (_, rank1)) = one.weights(), two.rank_weights()
    assert v1 == v2 == 3 and all(torch.equal(w2[k], rank1[k]) for k in w2)  # both ranks hold one set of weights
    diff = {k: (w1[k] - w2[k]).abs().max().item() for k in w1 if not k.endswith("in_proj_bias")}
    print(f"max |weights(2 ranks) - weights(1 rank)| after 3 updates = {max(diff.values()):.3g}")
    assert max(diff.values()) <= 1e-5
    # an attention layer's key bias gets no gradient (softmax is shift-invariant): its ~1e-9 of float
    # noise, summed in another order by two ranks, is what AdamW scales up to steps of about lr
    d = POLICY.d_model
    keys = [(w1[k][d : 2 * d] - w2[k][d : 2 * d]).abs().max().item() for k in w1 if k.endswith("in_proj_bias")]
    queries_values = [(torch.cat([w1[k][:d], w1[k][2 * d :]]) - torch.cat([w2[k][:d], w2[k][2 * d :]])).abs().max().item()
                      for k in w1 if k.endswith("in_proj_bias")]  # fmt: skip
    print(f"key biases {max(keys):.3g}, query and value biases {max(queries_values):.3g}")
    assert max(queries_values) <= 1e-5
    assert two._get([h.acting_version.remote() for h in two.handles], "versions") == [3, 3]  # no broadcast needed


def test_a_checkpoint_over_two_ranks_restores_in_a_new_world(groups, prompt_sets, tmp_path):
    _, two = groups
    saved = two.save_checkpoint(str(tmp_path))
    version, before = two.weights()
    two.update(scored(two.rollout(prompt_sets, NOISE + 9, SELECTION), 9))
    assert two.version == version + 1
    two.restart()  # a world that lost a rank is replaced whole
    assert two.load_checkpoint(saved) == version
    restored = two.weights()[1]
    assert all(torch.equal(before[k], restored[k]) for k in before)
    assert two._get([h.acting_version.remote() for h in two.handles], "versions") == [version, version]
    assert two.restarts == 1
