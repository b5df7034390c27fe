"""The combined reward by hand, and the score cache's keys."""

import numpy as np
import pytest

from reward_actors.cache import ScoreCache, scene_key
from reward_actors.combine import combine, normalise_in_groups
from reward_actors.config import RewardConfig
from reward_actors.types import SceneBatch, ScoreResult


def result(scores, valid=None):
    scores = np.array(scores, float)
    valid = np.ones(len(scores), bool) if valid is None else np.array(valid)
    return ScoreResult(np.where(valid, scores, np.nan), valid, [None if v else "no history" for v in valid], "m", "v1")


def test_weighted_sum_renormalises_over_valid_components():
    res = {"alignment": result([0.8, 0.2]), "identity": result([0.5, 0.0], [True, False]), "artifacts": result([1.0, 0.6])}
    out = combine(res, {"alignment": 1.0, "identity": 1.0, "artifacts": 0.5})
    # scene 0: (0.8 + 0.5 + 0.5 * 1.0) / 2.5 = 0.72; scene 1 has no identity: (0.2 + 0.5 * 0.6) / 1.5 = 1/3
    np.testing.assert_allclose(out.total, [0.72, 1 / 3])
    assert out.valid.all() and out.masked == {"alignment": 0, "identity": 1, "artifacts": 0}


def test_all_components_masked_is_masked_not_invented():
    out = combine({"alignment": result([0.3], [False])}, {"alignment": 1.0})
    assert not out.valid[0] and np.isnan(out.total[0])


def test_group_normalisation_by_hand():
    z = normalise_in_groups(np.array([1.0, 3.0, 10.0, np.nan, 14.0]), np.array([0, 0, 1, 1, 1]))
    # group 0: mean 2, population std 1 -> [-1, 1]; group 1 (nan left out): mean 12, std 2 -> [-1, nan, 1]
    np.testing.assert_allclose(z, [-1, 1, -1, np.nan, 1], atol=1e-5)


def test_unknown_weight_family_and_bad_config():
    with pytest.raises(ValueError, match="not scored"):
        combine({"alignment": result([0.1])}, {"beauty": 1.0})
    with pytest.raises(ValueError, match="unknown family 'beauty'"):
        RewardConfig(weights=(("beauty", 1.0),))
    with pytest.raises(ValueError, match="must be >= 0"):
        RewardConfig(weights=(("alignment", -1.0),))


def test_cache_keys_follow_content_and_version():
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    other = frames.copy()
    other[0, 0, 0, 0] = 1
    batch = SceneBatch([frames, frames.copy(), other], ["a", "a", "a"])
    keys = [scene_key(batch, i) for i in range(3)]
    assert keys[0] == keys[1] != keys[2]
    cache = ScoreCache(capacity=2)
    cache.put("v1", keys[0], 0.5, True, None)
    cache.put("v1", keys[2], 0.1, False, "failed")  # masked scores are not cached
    assert cache.get("v1", keys[0]) == (0.5, True, None) and cache.get("v2", keys[0]) is None
    assert cache.get("v1", keys[2]) is None and len(cache) == 1
