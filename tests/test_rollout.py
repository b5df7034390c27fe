"""The Rollout record: Arrow and Parquet round trips are exact, NaN and dtypes included."""

import numpy as np
import pytest

from inflvg.rollout import (
    Rollout,
    Transition,
    collate_transitions,
    from_arrow,
    group_rollouts,
    read_parquet,
    to_arrow,
    write_parquet,
)


def make_rollout(seed: int, frames: bool) -> Rollout:
    rng = np.random.default_rng(seed)
    transitions = [
        Transition(
            scene=s, features=rng.standard_normal((16 * s, 35)).astype(np.float32),
            prompt_tokens=rng.standard_normal((24, 32)).astype(np.float32), prompt_mask=np.arange(24) < 6 + s,
            chosen=np.array([3, 0, 7, -1][: 2 + s], np.int64), logp_old=float(np.float32(rng.standard_normal())),
        )
        for s in (1, 2)
    ]  # fmt: skip
    return Rollout(
        prompt_set_id=f"story-{seed}", group_id=seed // 2, rollout_index=seed % 2, policy_version=5, noise_seed=11,
        selection_seed=100 + seed, scene_rewards=np.array([0.5, np.nan, 0.25], np.float32),
        scores={"alignment": np.array([0.1, np.nan, 0.3], np.float32), "identity": np.zeros(3, np.float32)},
        transitions=transitions, prompts=["a", "character B jumps", "c"],
        frames=rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8) if frames else None,
    )  # fmt: skip


def assert_same(a: Rollout, b: Rollout) -> None:
    def same(x, y):
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()

    for f in ("prompt_set_id", "group_id", "rollout_index", "policy_version", "noise_seed", "selection_seed", "prompts"):
        assert getattr(a, f) == getattr(b, f), f
    same(a.scene_rewards, b.scene_rewards)
    assert a.scores.keys() == b.scores.keys()
    for k in a.scores:
        same(a.scores[k], b.scores[k])
    assert (a.frames is None) == (b.frames is None)
    if a.frames is not None:
        same(a.frames, b.frames)
    assert len(a.transitions) == len(b.transitions)
    for s, t in zip(a.transitions, b.transitions, strict=True):
        assert s.scene == t.scene and s.logp_old == t.logp_old
        for f in ("features", "prompt_tokens", "prompt_mask", "chosen"):
            same(getattr(s, f), getattr(t, f))


def test_arrow_round_trip_is_exact():
    rollouts = [make_rollout(i, frames=i == 0) for i in range(4)]
    table = to_arrow(rollouts)
    assert table.num_rows == 4
    for a, b in zip(rollouts, from_arrow(table), strict=True):
        assert_same(a, b)


def test_parquet_round_trip_and_missing_file(tmp_path):
    rollouts = [make_rollout(i, frames=True) for i in range(2)]
    write_parquet(rollouts, tmp_path / "replay" / "step0.parquet")
    for a, b in zip(rollouts, read_parquet(tmp_path / "replay" / "step0.parquet"), strict=True):
        assert_same(a, b)
    with pytest.raises(FileNotFoundError, match=r"nope\.parquet"):
        read_parquet(tmp_path / "nope.parquet")


def test_grouping_and_collation_pad_pools_prompts_and_picks():
    rollouts = [make_rollout(i, frames=False) for i in (3, 0, 2, 1)]
    groups = group_rollouts(rollouts)
    assert [[(r.group_id, r.rollout_index) for r in g] for g in groups] == [[(0, 0), (0, 1)], [(1, 0), (1, 1)]]
    with pytest.raises(ValueError, match="same number"):
        group_rollouts(rollouts[:3])
    batch = collate_transitions(rollouts[0].transitions)
    assert batch.features.shape == (2, 32, 35) and batch.valid.sum(1).tolist() == [16, 32]
    assert batch.chosen.tolist() == [[3, 0, 7, -1], [3, 0, 7, -1]]  # K 3 and 4, padded with -1
    assert batch.features[0, 16:].abs().sum() == 0 and batch.logp_old.tolist() == [t.logp_old for t in rollouts[0].transitions]
    assert batch.prompt_mask.sum(1).tolist() == [7, 8]
