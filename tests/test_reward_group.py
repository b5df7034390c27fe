"""Reward actors on a real local Ray: batching over replicas, the score cache, a killed actor."""

import threading
import time

import numpy as np
import pytest

from inflvg.config import WorldConfig
from inflvg.world import render_story, sample_story
from reward_actors.artifacts import ArtifactScorer
from reward_actors.config import ArtifactConfig
from reward_actors.group import RewardGroup
from reward_actors.types import SceneBatch


def scenes(n: int, seed: int = 0) -> SceneBatch:
    world = WorldConfig()
    frames, prompts = [], []
    i = 0
    while len(frames) < n:
        story = sample_story(seed + i, "heldout", world.n_scenes, world.cast_size)
        video = render_story(story, world)
        for sc in range(world.n_scenes):
            frames.append(video.frames[sc * world.frames_per_scene : (sc + 1) * world.frames_per_scene])
            prompts.append(story.prompt(sc))
        i += 1
    return SceneBatch(frames[:n], prompts[:n])


def test_group_matches_local_scores_and_uses_the_cache(ray_local):
    batch = scenes(24)
    group = RewardGroup("artifacts", ArtifactConfig(replicas=2, num_cpus=0.5))
    assert len(set(group.pids())) == 2
    res = group.score(batch)
    local = ArtifactScorer().score(batch)
    np.testing.assert_allclose(res.scores, local.scores)
    assert res.valid.all() and (res.model, res.version) == (local.model, local.version)
    assert group.scored == 24
    again = group.score(batch.subset(list(range(10, 20))))
    np.testing.assert_allclose(again.scores, local.scores[10:20])
    assert group.scored == 24 and group.cache.hits == 10  # nothing re-scored


def test_killed_actor_mid_batch_every_score_exactly_once(ray_local):
    batch = scenes(1200, seed=50)
    expected = ArtifactScorer().score(batch).scores
    group = RewardGroup("artifacts", ArtifactConfig(replicas=1, num_cpus=0.5, max_restarts=2))
    pid_before = group.pids()[0]
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("r", group.score(batch)))
    worker.start()
    time.sleep(1.0)  # the batch takes several seconds; kill the actor while it is scoring
    ray_local.kill(group.handles[0], no_restart=False)
    worker.join(timeout=120)
    res = result["r"]
    assert group.retries == 1 and group.failures == 0
    assert len(res.scores) == len(batch) and res.valid.all()
    np.testing.assert_allclose(res.scores, expected)
    assert group.pids()[0] != pid_before  # Ray restarted the actor


def test_unknown_family_is_a_clear_error(ray_local):
    with pytest.raises(ValueError, match="unknown reward family 'beauty'"):
        RewardGroup("beauty", ArtifactConfig())


def test_a_scorer_raising_masks_and_counts_exactly_those_scenes(ray_local):
    from reward_actors.actors import injected_failure
    from reward_actors.cache import scene_key

    batch = scenes(48, seed=7)
    expected = ArtifactScorer().score(batch).scores
    group = RewardGroup("artifacts", ArtifactConfig(replicas=2, num_cpus=0.5))
    ray_local.get([h.fail_scenes.remote(0.25) for h in group.handles])
    raising = np.array([injected_failure(scene_key(batch, i), 0.25) for i in range(len(batch))])
    res = group.score(batch)
    assert 0 < raising.sum() < len(batch)
    assert np.array_equal(~res.valid, raising) and res.counts["scorer_errors"] == raising.sum()
    assert all("scorer raised RuntimeError" in res.reasons[i] for i in np.flatnonzero(raising))
    np.testing.assert_allclose(res.scores[~raising], expected[~raising])  # the other scenes keep their scores


@pytest.mark.parametrize("continue_if_lost", [False, True])
def test_a_family_lost_for_good_stops_the_caller_unless_told_to_continue(ray_local, continue_if_lost):
    from reward_actors.group import RewardFamilyLost

    batch = scenes(1200, seed=50)
    group = RewardGroup("artifacts", ArtifactConfig(num_cpus=0.5, max_restarts=0, continue_if_lost=continue_if_lost))
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("r", _catch(group.score, batch)))
    worker.start()
    time.sleep(1.0)
    ray_local.kill(group.handles[0], no_restart=True)  # dead for good: no restart left
    worker.join(timeout=180)
    assert group.failures == 1
    if continue_if_lost:
        assert not result["r"].valid.any() and "died twice" in result["r"].reasons[0]
    else:
        assert isinstance(result["r"], RewardFamilyLost) and "rewards.artifacts.continue_if_lost=True" in str(result["r"])


def _catch(fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - the test inspects what the caller would see
        return e
