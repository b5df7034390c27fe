"""The data-plane model (cluster/dataplane.py): records built at a generator's shapes without their
data give, category by category, the serialized bytes of a real StoryWorld step's records."""

import json

import numpy as np
import pytest
import torch

from cluster.dataplane import CATEGORIES, main, measure_step_bytes, step_bytes
from cluster.dataplane_model import model_rollouts, model_transition, modelled_bytes, wire_bytes
from cluster.sampler import PromptSampler
from inflvg.policy import PolicyConfig, PromptEmbedder, SelectionPolicy
from inflvg.sampling import request_seeds, sample_group
from reward_actors.config import RewardConfig

G, SETS, SCENES, REPLICAS = 3, 2, 4, 2
NAMES = ["alignment", "identity", "artifacts"]
FAMILIES = {f: getattr(RewardConfig(), f) for f in NAMES}  # family -> its config: what it reads


@pytest.fixture(scope="module")
def step(lively_gen):
    """A real StoryWorld step: P prompt sets x G rollouts from the tiny generator, scored as
    ``score_rollouts`` leaves them (one (S,) float32 score per family), and the policy's weights."""
    spec = lively_gen.spec
    torch.manual_seed(0)
    policy = SelectionPolicy(PolicyConfig(d_feature=spec.d_feature, d_prompt=spec.d_prompt, d_model=16, n_heads=2, hidden=32)).eval()
    prompt_sets = PromptSampler(0, SCENES, 3).next(SETS)
    rollouts = []
    for i, ps in enumerate(prompt_sets):
        noise, sel = request_seeds(5, 6, i, G)
        rollouts += sample_group(lively_gen, policy, PromptEmbedder(lively_gen), ps, i, noise, sel, spec.context, version=1)
    for r in rollouts:
        r.scene_rewards = np.zeros(len(r.prompts), np.float32)
        r.scores = {f: np.zeros(len(r.prompts), np.float32) for f in NAMES}
    return rollouts, prompt_sets, policy.state_dict()


def test_the_model_matches_a_real_storyworld_steps_serialized_bytes(lively_gen, step):
    rollouts, prompt_sets, weights = step
    first = rollouts[0]
    assert [t.scene for t in first.transitions] == list(range(1, SCENES))  # one transition per scene change
    pools = tuple(t.features.shape[0] for t in first.transitions)
    model = model_rollouts(lively_gen, prompt_sets, G, pools, lively_gen.spec.context.budget_k, lively_gen.spec.frames_per_scene, NAMES)
    for m, r in zip(model, rollouts, strict=True):  # every array of the model's records has the real one's shape and dtype
        for a, b in zip(
            [m.frames, m.scene_rewards, *[getattr(t, f) for t in m.transitions for f in ("features", "prompt_tokens", "prompt_mask", "chosen")]],
            [r.frames, r.scene_rewards, *[getattr(t, f) for t in r.transitions for f in ("features", "prompt_tokens", "prompt_mask", "chosen")]],
            strict=True,
        ):
            assert a is not None and b is not None and (a.shape, a.dtype) == (b.shape, b.dtype)
    measured = step_bytes(rollouts, prompt_sets, weights, FAMILIES, REPLICAS, wire_bytes)
    modelled = step_bytes(model, prompt_sets, weights, FAMILIES, REPLICAS, modelled_bytes)
    for c in (*CATEGORIES, "step"):
        assert modelled[c] == pytest.approx(measured[c], rel=0.02), c
    payload = sum(a.nbytes for r in rollouts for a in (r.frames, *[t.features for t in r.transitions]) if a is not None)
    assert measured["rollouts_to_driver"] > payload and measured["rollouts_to_learner"] > payload  # the frames and features cross twice
    assert measured["weights_to_workers"] == pytest.approx(REPLICAS * measured["weights_to_driver"], rel=0.01)


def test_serialized_size_counts_the_out_of_band_buffers_once(step):
    rollouts, _, _ = step
    r = rollouts[0]
    arrays = [r.frames, r.scene_rewards, *r.scores.values()] + [getattr(t, f) for t in r.transitions
                                                                for f in ("features", "prompt_tokens", "prompt_mask", "chosen")]  # fmt: skip
    payload = sum(a.nbytes for a in arrays if a is not None)
    assert payload < wire_bytes(r) < payload * 1.05
    assert modelled_bytes(r) == pytest.approx(wire_bytes(r), rel=0.002)


def test_a_transition_at_inflvg_scale_is_counted_without_allocating_it(lively_gen):
    spec = lively_gen.spec
    t = model_transition(lively_gen, "a knight rides into the forest", scene=3, pool_size=220_000, budget_k=9360)
    length = t.prompt_tokens.shape[0]
    assert t.features.shape == (220_000, spec.d_feature + 3 + 2 * length) and t.features.dtype == np.float32
    assert t.features.base is not None and t.features.strides == (0, 0)  # a view of one element
    assert modelled_bytes(t) > 220_000 * (spec.d_feature + 3 + 2 * length) * 4 + 9360 * 8


def test_the_driver_hook_returns_bytes_metrics(step):
    rollouts, prompt_sets, weights = step
    metrics = measure_step_bytes(rollouts, prompt_sets, weights, FAMILIES, REPLICAS)
    assert set(metrics) == {f"bytes_{c}" for c in (*CATEGORIES, "step")}
    hybrid_only = {"bytes_advantages_to_ranks", "bytes_gradients_allreduce"}
    assert all(isinstance(v, float) and (v > 0) == (k not in hybrid_only) for k, v in metrics.items())
    assert metrics["bytes_step"] == sum(metrics[f"bytes_{c}"] for c in CATEGORIES)


def test_a_hybrid_step_moves_no_features_and_no_weights(step):
    rollouts, prompt_sets, weights = step
    separate = step_bytes(rollouts, prompt_sets, weights, FAMILIES, REPLICAS)
    hybrid = step_bytes(rollouts, prompt_sets, weights, FAMILIES, REPLICAS, topology="hybrid", optimizer_steps=3)
    features = sum(t.features.nbytes + t.prompt_tokens.nbytes for r in rollouts for t in r.transitions)
    assert separate["rollouts_to_driver"] - hybrid["rollouts_to_driver"] > 0.99 * features
    assert hybrid["rollouts_to_learner"] == hybrid["weights_to_driver"] == hybrid["weights_to_workers"] == 0
    assert hybrid["gradients_allreduce"] == 2 * (REPLICAS - 1) * 3 * sum(v.nbytes for v in weights.values())
    transitions = sum(len(r.transitions) for r in rollouts)
    assert 0 < hybrid["advantages_to_ranks"] < 100 * transitions
    assert hybrid["frames_to_rewards"] == separate["frames_to_rewards"]


def test_the_cli_writes_json_and_a_table(tmp_path, capsys):
    out = tmp_path / "dp.json"
    main(["--generator", "storyworld", "--prompt-sets", "2", "--group-size", "2", "--pools", "16,80,144", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["bytes_per_step"] == sum(result["bytes_by_category"].values())
    assert result["peak_bytes_per_worker"] == max(result["peak_bytes_by_process"].values())
    assert set(result["alternatives"]) == {"separate"}  # StoryWorld's frames are under 224 already
    assert result["alternatives"]["separate"]["step"] > result["bytes_per_step"]
    assert result["bytes_by_category"]["rollouts_to_learner"] == 0 and result["bytes_by_category"]["gradients_allreduce"] > 0
    assert [t["features"][0] for t in result["shapes"]["transitions"]] == [16, 80, 144]
    assert out.with_suffix(".md").exists() and "rollouts_to_learner" in capsys.readouterr().out
