"""Rollout workers on a tiny real generator: GRPO groups share noise and differ by selections,
stale weights are refused, a real Ray group returns the in-process results in order, and a
replica killed mid-call has its prompt sets re-issued exactly once."""

import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from inflvg.generate import generate
from inflvg.generator.weights import save_generator
from inflvg.policy import LearnedStrategy, PolicyConfig, SelectionPolicy
from inflvg.rollout import read_parquet, write_parquet
from inflvg.world import sample_prompt_set
from rollout_workers.config import RolloutConfig
from rollout_workers.worker import NoWeightsError, RolloutWorker

G = 3  # group size
N_SCENES = 3
N_SETS = 16  # the kill test needs a call long enough to land a kill in the middle of it
NOISE, SELECTION = 11, 22
POLICY = PolicyConfig(d_feature=32, d_prompt=32, d_model=16, n_heads=2, hidden=32)


@pytest.fixture(scope="module")
def weights(lively, tmp_path_factory) -> str:
    gen, world, ctx = lively
    path = tmp_path_factory.mktemp("generator") / "generator.pt"
    save_generator(gen, world, ctx, path, meta={"note": "test_rollout_workers"})
    return str(path)


@pytest.fixture(scope="module")
def state_dicts() -> list[dict]:
    """Two different fresh policies' weights (A, B)."""
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(SelectionPolicy(POLICY).state_dict())
    return out


@pytest.fixture(scope="module")
def worker(weights, state_dicts) -> RolloutWorker:
    w = RolloutWorker(RolloutConfig(generator_weights=weights, group_size=G), POLICY)
    assert w.set_weights(3, state_dicts[0])
    return w


@pytest.fixture(scope="module")
def prompt_sets(tiny) -> list:
    _, world, _ = tiny
    return [sample_prompt_set(100 + i, "train", N_SCENES, world.cast_size, f"set-{i}") for i in range(N_SETS)]


@pytest.fixture(scope="module")
def expected(worker, prompt_sets):
    """In-process rollouts of every prompt set, and the seconds one prompt set took."""
    start = time.perf_counter()
    rollouts = worker.rollout(prompt_sets, NOISE, SELECTION)
    return rollouts, (time.perf_counter() - start) / len(prompt_sets)


def assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for f in ("prompt_set_id", "group_id", "rollout_index", "policy_version", "noise_seed", "selection_seed", "prompts"):
            assert getattr(x, f) == getattr(y, f), f
        assert np.array_equal(x.frames, y.frames) and np.array_equal(x.scene_rewards, y.scene_rewards, equal_nan=True)
        assert [t.scene for t in x.transitions] == [t.scene for t in y.transitions]
        for s, t in zip(x.transitions, y.transitions, strict=True):
            assert s.logp_old == t.logp_old
            for f in ("features", "prompt_tokens", "prompt_mask", "chosen"):
                assert np.array_equal(getattr(s, f), getattr(t, f)), f


def test_a_group_shares_noise_and_differs_by_selection(worker, expected, prompt_sets, tmp_path):
    rollouts = expected[0][: 2 * G]
    fps, (height, width) = worker.gen.spec.frames_per_scene, worker.gen.spec.frame_shape
    assert [(r.prompt_set_id, r.group_id, r.rollout_index) for r in rollouts] == [
        (f"set-{i}", i, g) for i in range(2) for g in range(G)
    ]
    for i in range(2):
        group = rollouts[i * G : (i + 1) * G]
        assert len({r.noise_seed for r in group}) == 1 and len({r.selection_seed for r in group}) == G
        first = group[0]
        assert first.frames.shape == (N_SCENES * fps, height, width, 3) and first.frames.dtype == np.uint8
        for r in group:
            assert r.policy_version == 3 and r.prompts == list(prompt_sets[i].scenes)
            assert r.scene_rewards.shape == (N_SCENES,) and np.isnan(r.scene_rewards).all()  # the driver scores later
            assert [t.scene for t in r.transitions] == list(range(1, N_SCENES))  # scene 0: empty pool, no action
            assert all(t.chosen.shape == (worker.ctx.budget_k,) and np.isfinite(t.logp_old) for t in r.transitions)
            assert np.array_equal(r.frames[:fps], first.frames[:fps])  # shared noise, no selection yet
        for r in group[1:]:
            assert not np.array_equal(r.transitions[0].chosen, first.transitions[0].chosen)
            assert not np.array_equal(r.frames[fps:], first.frames[fps:])  # other context, other video
    # a group is reproduced from its records alone
    group, ps = rollouts[G : 2 * G], prompt_sets[1]
    strategy = LearnedStrategy(worker.policy, worker.embed, seed=[r.selection_seed for r in group])
    again = generate(worker.gen, [ps] * G, strategy, seed=group[0].noise_seed, ctx=worker.ctx, shared_noise=True)
    assert all(np.array_equal(again.frames[g], r.frames) for g, r in enumerate(group))
    write_parquet(rollouts, tmp_path / "rollouts.parquet")
    assert_same(read_parquet(tmp_path / "rollouts.parquet"), rollouts)


def test_the_driver_writes_a_steps_scored_rollouts_without_frames(ray_local, worker, prompt_sets, tmp_path):
    """ServiceConfig.rollout_parquet: the driver's per-step file, read back by us and by Ray Data."""
    import ray.data

    from cluster.train import save_rollouts
    from inflvg.storage import Storage

    rng = np.random.default_rng(0)
    scored = worker.rollout(prompt_sets[:1], NOISE, SELECTION)
    for r in scored:  # as the driver's scoring leaves them: rewards and per-family scores, NaN where masked
        r.scene_rewards = rng.random(N_SCENES).astype(np.float32)
        r.scores = {"identity": np.array([0.5, np.nan, 0.25], np.float32), "alignment": rng.random(N_SCENES).astype(np.float32)}
    path = save_rollouts(scored, Storage(tmp_path), step=3)
    assert path == str(tmp_path / "rollouts" / "step-000003.parquet")
    assert all(r.frames is not None for r in scored)  # the driver's rollouts keep their frames
    back = read_parquet(path)
    assert all(b.frames is None for b in back)
    assert_same([replace(r, frames=None) for r in scored], back)
    for a, b in zip(scored, back, strict=True):
        assert a.scores.keys() == b.scores.keys() and all(np.array_equal(a.scores[k], b.scores[k], equal_nan=True) for k in a.scores)
    rows = ray.data.read_parquet(str(tmp_path / "rollouts")).take_all()
    assert [(row["group_id"], row["rollout_index"], row["selection_seed"]) for row in rows] == [
        (r.group_id, r.rollout_index, r.selection_seed) for r in scored
    ]
    assert all(row["frames"] is None and len(row["transitions"]) == N_SCENES - 1 for row in rows)


def test_frames_leave_the_worker_at_the_short_side_asked_for(weights, state_dicts, expected, prompt_sets):
    from inflvg.video import shrink

    small = RolloutWorker(RolloutConfig(generator_weights=weights, group_size=G, frames_short_side=16), POLICY)
    assert small.set_weights(3, state_dicts[0])
    got, want = small.rollout(prompt_sets[:1], NOISE, SELECTION), expected[0][:G]
    height, width = want[0].frames.shape[1:3]
    assert min(height, width) > 16 and min(got[0].frames.shape[1:3]) == 16  # aspect kept, shorter side 16
    for a, b in zip(got, want, strict=True):
        assert np.array_equal(a.frames, shrink(b.frames, 16)) and a.frames.dtype == np.uint8
        assert [t.chosen.tolist() for t in a.transitions] == [t.chosen.tolist() for t in b.transitions]  # only the frames differ
    flat = np.full((1, 32, 48, 3), 200, np.uint8)
    assert np.array_equal(shrink(flat, 16), np.full((1, 16, 24, 3), 200, np.uint8)) and shrink(flat, 64) is flat


def test_stale_weights_are_refused_and_a_fresh_worker_does_not_act(worker, weights, state_dicts, prompt_sets):
    policy_a, policy_b = state_dicts
    assert worker.set_weights(2, policy_b) is False
    assert worker.version() == 3
    assert worker.set_weights(3, policy_b) is True  # same version: a no-op
    assert all(torch.equal(v, policy_a[k]) for k, v in worker.policy.state_dict().items())
    fresh = RolloutWorker(RolloutConfig(generator_weights=weights, group_size=2, budget_k=4), POLICY)
    with pytest.raises(NoWeightsError, match="set_weights"):
        fresh.rollout(prompt_sets[:1], NOISE, SELECTION)
    assert fresh.set_weights(0, policy_b)
    (r, _) = fresh.rollout(prompt_sets[:1], NOISE, SELECTION)
    assert r.frames.shape[0] == prompt_sets[0].n_scenes * fresh.gen.spec.frames_per_scene and all(t.chosen.shape == (4,) for t in r.transitions)
    with pytest.raises(ValueError, match="d_feature"):
        RolloutWorker(RolloutConfig(generator_weights=weights), PolicyConfig(d_feature=16, d_prompt=32))


@pytest.mark.parametrize(
    ("field", "value"),
    [("group_size", 1), ("budget_k", 0), ("replicas", 0), ("threads", 0), ("max_restarts", -1), ("num_gpus", -1.0),
     ("generator_weights", ""), ("generator", "wan"), ("frames_short_side", 8)],
)  # fmt: skip
def test_config_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=f"RolloutConfig.{field}"):
        RolloutConfig(**{field: value})


@pytest.fixture(scope="module")
def group(ray_local, weights, state_dicts):
    from rollout_workers.group import RolloutGroup

    g = RolloutGroup(RolloutConfig(generator_weights=weights, group_size=G, replicas=2, num_cpus=1, max_restarts=1), POLICY)
    g.sync(3, ray_local.put(state_dicts[0]))
    return g


def test_ray_group_matches_in_process_rollouts_in_order(ray_local, group, expected, prompt_sets, worker):
    assert len(set(group.pids())) == 2
    got = group.rollout(prompt_sets[:3], NOISE, SELECTION)  # replica 0 runs sets 0-1, replica 1 set 2
    assert_same(got, expected[0][: 3 * G])
    with pytest.raises(RuntimeError, match="refused weights version 2"):
        group.sync(2, ray_local.put(worker.policy.state_dict()))
    assert group.version == 3 and group.reissued == 0


def test_replica_killed_mid_call_is_reissued_once(ray_local, group, expected, prompt_sets):
    rollouts, per_set_s = expected
    pid_before = group.pids()[1]
    delay = max(0.3, 0.5 * per_set_s * N_SETS / 2)  # half-way through replica 1's chunk
    killer = threading.Timer(delay, lambda: ray_local.kill(group.handles[1], no_restart=False))
    killer.start()
    got = group.rollout(prompt_sets, NOISE, SELECTION)
    killer.join()
    assert group.reissued == N_SETS // 2, f"the kill after {delay:.2f}s missed the call"
    assert_same(got, rollouts)  # every group exactly once, in order, as if nothing happened
    assert group.pids()[1] != pid_before  # Ray restarted it ...
    assert ray_local.get(group.handles[1].version.remote()) == 3  # ... and it got the weights again
    # a replica restarted between calls holds no weights: its chunk is re-issued after a push
    ray_local.kill(group.handles[0], no_restart=False)
    deadline = time.monotonic() + 60
    while not _restarted_without_weights(ray_local, group.handles[0]):
        assert time.monotonic() < deadline, "Ray did not restart the killed replica"
        time.sleep(0.2)
    assert_same(group.rollout(prompt_sets[:3], NOISE, SELECTION), rollouts[: 3 * G])
    assert group.reissued == N_SETS // 2 + 2


def _restarted_without_weights(ray, handle) -> bool:
    try:
        return ray.get(handle.version.remote()) == -1
    except ray.exceptions.RayActorError:
        return False
