"""The DeepSpeed learner on CPU/gloo: a real GRPO step against plain torch, the Ray actor and the
object store, exact resume from an atomic checkpoint, a ZeRO-3/bf16 smoke, config errors."""

import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from inflvg.grpo import credit_transitions, grpo_loss
from inflvg.policy import N_EXTRA, PolicyConfig, SelectionPolicy, gumbel_top_k, plackett_luce_log_prob
from inflvg.rollout import Rollout, Transition, collate_transitions, group_rollouts
from learner.checkpoint import (
    checkpoint_name,
    commit_dir,
    latest_checkpoint,
    list_checkpoints,
    load_driver_state,
    prune_checkpoints,
    set_latest,
    staging_dir,
)
from learner.config import LearnerConfig

POLICY = PolicyConfig(d_feature=16, d_prompt=8, d_model=16, n_heads=2, hidden=32)
CFG = LearnerConfig(policy=POLICY, lr=1e-2, zero_stage=0, minibatch_size=64, epochs=2, seed=3)


def make_rollouts(weights: dict, seed: int, n_sets: int = 2, group_size: int = 4, scenes: int = 3) -> list[Rollout]:
    """Rollouts acted by a policy with ``weights``: random candidate features (pools of 8-10) and
    prompts (some padded), selections drawn by Gumbel-top-3 with their exact log-probs, random
    scene rewards, one of them masked (NaN). Scene 0 has an empty pool, so no transition."""
    policy = SelectionPolicy(POLICY)
    policy.load_state_dict(weights)
    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    rollouts = []
    for p in range(n_sets):
        prompts = torch.randn(scenes, 5, POLICY.d_prompt, generator=gen)  # (S, L, d_prompt), shared by the group
        for g in range(group_size):
            transitions = []
            for s in range(1, scenes):
                n = 10 - (g + s) % 3
                overlap = torch.randint(0, 2, (1, n, 10), generator=gen).float()  # word overlaps and first mentions of 5 prompt words
                feats = torch.cat([torch.randn(1, n, POLICY.d_feature + N_EXTRA, generator=gen), overlap], -1)  # (1, N, D)
                mask = torch.ones(1, 5, dtype=torch.bool)
                mask[0, 4] = s % 2 == 0
                with torch.no_grad():
                    logits = policy(feats, prompts[s : s + 1], mask)
                    chosen = gumbel_top_k(logits, 3, gen)
                    logp = float(plackett_luce_log_prob(logits, chosen))
                transitions.append(Transition(s, feats[0].numpy(), prompts[s].numpy(), mask[0].numpy(), chosen[0].numpy(), logp))
            rewards = rng.normal(size=scenes).astype(np.float32)
            rollouts.append(Rollout(f"story-{p}", p, g, 0, p, g, rewards, transitions=transitions, prompts=["x"] * scenes))
    rollouts[1].scene_rewards[2] = np.nan  # a failed reward model: masked, never faked
    return rollouts


def torch_reference_update(cfg: LearnerConfig, weights: dict, rollouts: list[Rollout]) -> dict:
    """The same GRPO update in plain torch (AdamW, clip_grad_norm_), one minibatch per epoch."""
    policy = SelectionPolicy(cfg.policy)
    policy.load_state_dict(weights)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    transitions, adv, valid = credit_transitions(group_rollouts(rollouts))
    b = collate_transitions([t for t, v in zip(transitions, valid, strict=True) if v])
    for _ in range(cfg.epochs):
        logp = plackett_luce_log_prob(policy(b.features, b.prompt_tokens, b.prompt_mask, b.valid), b.chosen, b.valid)
        loss, _ = grpo_loss(logp, b.logp_old, adv[valid], clip_eps=cfg.clip_eps)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
        opt.step()
    return policy.state_dict()


def test_deepspeed_step_moves_the_policy_like_plain_torch():
    from learner.actor import Learner

    learner = Learner(CFG)
    version, w0 = learner.weights()
    rollouts = make_rollouts(w0, seed=1)
    m = learner.update(rollouts)
    new_version, w1 = learner.weights()
    assert (version, new_version, m["version"]) == (0, 1, 1)
    assert all(w.dtype == torch.float32 and w.device.type == "cpu" for w in w1.values())
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)
    expected = torch_reference_update(CFG, w0, rollouts)
    # the attention's key bias has zero true gradient (softmax ignores a shared shift): Adam turns
    # its rounding noise into steps of either sign, so it is left out of the comparison
    d = POLICY.d_model
    for w in (w1, expected):
        w["cross.in_proj_bias"] = torch.cat([w["cross.in_proj_bias"][:d], w["cross.in_proj_bias"][2 * d :]])
    for k in w0:
        torch.testing.assert_close(w1[k], expected[k], atol=1e-6, rtol=1e-5)
    # 2 sets x 4 rollouts x 2 scene changes; the NaN reward drops one
    assert (m["transitions"], m["transitions_total"], m["masked_rewards"], m["optimizer_steps"]) == (15, 16, 1, 2)
    assert m["zero_variance_fraction"] == 0 and m["advantage_std"] > 0.5 and m["grad_norm"] > 0
    assert 0 < m["entropy"] < 3 * math.log(10) and m["kl_old"] >= 0
    assert all(math.isfinite(v) for v in m.values())


def _without_key_bias(w: dict) -> dict:
    """The attention's key bias has zero true gradient (softmax ignores a shared shift): Adam turns
    its rounding noise into steps of either sign, so comparisons leave it out."""
    d = POLICY.d_model
    return {**w, "cross.in_proj_bias": torch.cat([w["cross.in_proj_bias"][:d], w["cross.in_proj_bias"][2 * d :]])}


def test_shards_average_to_the_gradients_of_one_process():
    """``shard_update`` on W ranks, the all-reduce done by hand (a mean over ranks): the gradient of every
    minibatch step equals the one-process update's, a rank with none of a minibatch included."""
    from inflvg.update import Shard, UpdateConfig, credit, shard_update

    torch.manual_seed(0)
    policy = SelectionPolicy(POLICY)
    rollouts = make_rollouts(policy.state_dict(), seed=5, n_sets=3)
    cfg = UpdateConfig(epochs=2, minibatch_size=5, seed=1)
    used, adv, _ = credit(rollouts, cfg)
    logits = lambda mb: policy(mb.features, mb.prompt_tokens, mb.prompt_mask, mb.valid)  # noqa: E731
    zero = lambda: sum(p.sum() * 0.0 for p in policy.parameters())  # noqa: E731

    def grads_of(shard: Shard) -> list[list[torch.Tensor]]:
        out = []

        def step(loss: torch.Tensor) -> float:
            policy.zero_grad()
            loss.backward()
            out.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in policy.parameters()])
            return 0.0

        shard_update(shard, logits, step, cfg, version=0, device="cpu", zero_loss=zero)
        return out

    whole = grads_of(Shard(used, adv, (len(used),)))
    counts = (len(used) - 1, 1)  # rank 1 holds one transition: most minibatches have none of it
    ranks = [grads_of(Shard(used[:-1], adv[:-1], counts, 0)), grads_of(Shard(used[-1:], adv[-1:], counts, 1))]
    assert len(whole) == len(ranks[0]) == len(ranks[1]) == 2 * math.ceil(len(used) / 5)
    for step, expected in enumerate(whole):
        for p, (g0, g1) in enumerate(zip(ranks[0][step], ranks[1][step], strict=True)):
            assert torch.allclose((g0 + g1) / 2, expected[p], atol=1e-6), f"step {step}, parameter {p}"


@pytest.mark.parametrize("zero_stage", [0, 1])
def test_refinement_takes_the_learners_update(zero_stage):
    """Test-time refinement (torch AdamW) and the DeepSpeed learner: the same update on the same
    transitions, with minibatches, two epochs and gradient clipping that bites."""
    from inflvg.refine import RefineConfig, TorchUpdate
    from learner.actor import Learner

    cfg = replace(CFG, zero_stage=zero_stage, minibatch_size=4, max_grad_norm=0.05, advantage_scale="batch", weight_decay=0.01)
    learner = Learner(cfg)
    _, w0 = learner.weights()
    rollouts = make_rollouts(w0, seed=2)
    m = learner.update(rollouts)
    policy = SelectionPolicy(POLICY)
    policy.load_state_dict(w0)
    refine_cfg = RefineConfig(lr=cfg.lr, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, update=cfg.update)
    r = TorchUpdate(policy, refine_cfg)(rollouts, version=0)
    assert m["optimizer_steps"] == r["optimizer_steps"] == 8  # 15 transitions in minibatches of 4, 2 epochs
    assert r["grad_norm"] > cfg.max_grad_norm  # the clip acts
    learned, refined = _without_key_bias(learner.weights()[1]), _without_key_bias(policy.state_dict())
    diff = max((learned[k] - refined[k]).abs().max().item() for k in learned)
    assert diff <= 1e-6, diff
    for key in ("loss", "policy_loss", "clip_fraction", "entropy"):
        assert m[key] == pytest.approx(r[key], abs=1e-6)


def test_learner_as_a_ray_actor_serves_weights_through_the_object_store():
    ray = pytest.importorskip("ray")
    from learner.actor import Learner

    def score(weights: dict, transitions: list) -> torch.Tensor:
        policy = SelectionPolicy(POLICY)
        policy.load_state_dict(weights)  # a top-level ObjectRef argument arrives resolved
        b = collate_transitions(transitions)
        with torch.no_grad():
            return plackett_luce_log_prob(policy(b.features, b.prompt_tokens, b.prompt_mask, b.valid), b.chosen, b.valid)

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    try:
        actor = ray.remote(Learner).remote(CFG)
        _, w0 = ray.get(actor.weights.remote())
        rollouts = make_rollouts(w0, seed=2)
        metrics = ray.get(actor.update.remote(rollouts))
        assert metrics["version"] == 1 and metrics["transitions"] == 15 and math.isfinite(metrics["loss"])
        version, weights = ray.get(actor.weights.remote())
        ref = ray.put(weights)
        transitions = [t for r in rollouts for t in r.transitions]
        elsewhere = ray.get(ray.remote(score).remote(ref, transitions))
        here = score(weights, transitions)
        assert version == 1 and torch.equal(elsewhere, here)
        assert not torch.equal(here, torch.tensor([t.logp_old for t in transitions]))  # the update moved it
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        ray.shutdown()


@pytest.mark.parametrize("uri", [False, True], ids=["folder", "file-uri"])
def test_checkpoint_resume_is_exact(tmp_path, monkeypatch, uri):
    from learner.actor import Learner

    root = f"file://{tmp_path}" if uri else tmp_path  # a URI goes through pyarrow.fs, as s3:// would
    cfg = replace(CFG, zero_stage=1, kl_beta=0.05, minibatch_size=8)
    a = Learner(cfg)
    _, w0 = a.weights()
    first, second = make_rollouts(w0, seed=3), make_rollouts(w0, seed=4)
    a.update(first)
    _, saved = a.weights()
    driver = {"step": 1, "sampler_position": 7}
    location = a.save_checkpoint(root, driver_state=driver)
    expected = a.update(second)
    _, after = a.weights()

    torch.manual_seed(99)  # the fresh learner starts from other weights: everything must come from disk
    b = Learner(cfg, init_weights=SelectionPolicy(POLICY).state_dict())
    assert b.load_checkpoint(root) == 1
    assert all(torch.equal(b.weights()[1][k], saved[k]) for k in saved)
    got = b.update(second)
    assert all(torch.equal(b.weights()[1][k], after[k]) for k in after)
    assert {k: v for k, v in got.items() if k != "seconds"} == {k: v for k, v in expected.items() if k != "seconds"}
    assert expected["kl"] > 0 and expected["optimizer_steps"] == 4  # 15 transitions in 2 minibatches, 2 epochs

    state = load_driver_state(root)
    assert (state["step"], state["sampler_position"]) == (1, 7)
    assert latest_checkpoint(root) == location and location.endswith("/" + checkpoint_name(1))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    def crash(save_dir, **_):  # dies half-way through writing the engine files
        (Path(save_dir) / "engine").mkdir()
        (Path(save_dir) / "engine" / "partial.pt").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(a.engine, "save_checkpoint", crash)
    with pytest.raises(OSError, match="disk full"):
        a.save_checkpoint(root)
    assert latest_checkpoint(root) == location and list_checkpoints(root) == [location]

    shard = next(p for p in sorted((tmp_path / checkpoint_name(1) / "engine").rglob("*")) if p.is_file())
    shard.write_bytes(shard.read_bytes()[:-1] + b"x")  # one damaged byte in DeepSpeed's own files
    with pytest.raises(ValueError, match=f"{shard.name} does not match its checksum"):
        b.load_checkpoint(root)


def test_zero3_bf16_smoke(monkeypatch):
    import torch.nn.functional as F

    from learner.actor import Learner

    # ZeRO-3 replaces torch.nn.functional.linear for the whole process (harmless in the learner's
    # own Ray actor process); restored afterwards so later tests in this process compute as before
    monkeypatch.setattr(F, "linear", F.linear)
    learner = Learner(replace(CFG, zero_stage=3, dtype="bf16", epochs=1))
    _, w0 = learner.weights()
    m = learner.update(make_rollouts(w0, seed=5))
    version, w1 = learner.weights()
    assert version == 1 and all(w.dtype == torch.float32 for w in w1.values())
    assert any(not torch.equal(w0[k], w1[k]) for k in w0) and math.isfinite(m["loss"])


def test_atomic_helpers_ignore_half_written_checkpoints(tmp_path):
    for version in (1, 2, 3):
        stage = staging_dir(tmp_path, checkpoint_name(version))
        (stage / "payload").write_text(str(version))
        commit_dir(stage, tmp_path / checkpoint_name(version))
        set_latest(tmp_path, checkpoint_name(version))
    (staging_dir(tmp_path, checkpoint_name(4)) / "payload").write_text("half")  # a crash mid-save
    assert Path(latest_checkpoint(tmp_path)).name == checkpoint_name(3)
    (tmp_path / "latest").unlink()  # a crash between the rename and the pointer update
    assert Path(latest_checkpoint(tmp_path)).name == checkpoint_name(3)
    set_latest(tmp_path, checkpoint_name(2))
    assert prune_checkpoints(tmp_path, keep=0) == [] and len(list_checkpoints(tmp_path)) == 3  # 0 keeps all
    assert [Path(p).name for p in prune_checkpoints(tmp_path, keep=1)] == [checkpoint_name(1)]  # latest is kept
    stage = staging_dir(tmp_path, checkpoint_name(2))
    (stage / "payload").write_text("again")
    commit_dir(stage, tmp_path / checkpoint_name(2))  # a re-save of one version replaces it whole
    assert (Path(latest_checkpoint(tmp_path)) / "payload").read_text() == "again"
    assert latest_checkpoint(tmp_path / "nothing") is None
    with pytest.raises(FileNotFoundError, match="save_checkpoint"):
        load_driver_state(tmp_path / "nothing")


@pytest.mark.parametrize(
    ("change", "field"),
    [({"dtype": "fp16"}, "dtype"), ({"zero_stage": 5}, "zero_stage"), ({"kl_beta": -0.1}, "kl_beta"),
     ({"backend": "nccl"}, "backend"), ({"minibatch_size": 0}, "minibatch_size"), ({"num_gpus": 2}, "num_gpus")],
)  # fmt: skip
def test_config_errors_name_the_field(change, field):
    with pytest.raises(ValueError, match=f"LearnerConfig.{field}") as err:
        LearnerConfig(**change)
    if field == "dtype":
        assert "CPU" in str(err.value) and "bf16" in str(err.value)


def test_a_build_lock_left_by_a_killed_compile_is_named(tmp_path, capsys):
    """A lock older than the threshold is named on stderr with the advice; a fresh one (a compile under
    way) and other files are not."""
    import os
    import time

    from learner.actor import warn_stale_build_locks

    old, fresh = tmp_path / "py311_cpu" / "deepspeed_shm_comm" / "lock", tmp_path / "py311_cpu" / "other_op" / "lock"
    for p in (old, fresh):
        p.parent.mkdir(parents=True)
        p.touch()
    (old.parent / "shm.o").touch()
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert warn_stale_build_locks(tmp_path, older_than_s=300) == [old]
    err = capsys.readouterr().err
    assert str(old) in err and "delete the file" in err and str(fresh) not in err
