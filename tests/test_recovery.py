"""A learner that Ray restarts between two driver calls: the next call reaches a fresh learner,
so it must fail as a loss (and the driver restore the last checkpoint), not train on silently."""

import time

import pytest

from cluster.fence import FencedLearner
from cluster.recovery import LearnerLost, learner_get, wait_for_learner
from inflvg.policy import PolicyConfig
from learner.config import LearnerConfig

CFG = LearnerConfig(policy=PolicyConfig(d_feature=16, d_prompt=8, d_model=16, n_heads=2, hidden=32), zero_stage=0, seed=3)


def wait_until_restarted(ray, learner, timeout_s: float) -> None:
    """Until the actor answers as the instance Ray restarted (its constructor saw the restart)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ray.get(learner.__ray_call__.remote(lambda self: self.fenced), timeout=timeout_s):
                return
        except ray.exceptions.RayActorError:  # dying, or restarting
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the learner was not restarted within {timeout_s} s")


def test_a_learner_restarted_between_calls_refuses_them_until_the_driver_has_seen_it(ray_local):
    ray = ray_local
    learner = ray.remote(FencedLearner).options(max_restarts=1, max_task_retries=0).remote(CFG)
    version, _ = learner_get(learner.weights.remote(), "weights", 120)
    assert version == 0  # a first start is not fenced
    ray.kill(learner, no_restart=False)
    wait_until_restarted(ray, learner, 120)
    with pytest.raises(LearnerLost, match="the learner died before weights: Ray restarted it"):
        learner_get(learner.weights.remote(), "weights", 120)
    with pytest.raises(LearnerLost, match="before update"):
        learner_get(learner.update.remote([]), "update", 120)
    wait_for_learner(learner, 120)  # the driver has seen it: the calls are answered again
    version, weights = learner_get(learner.weights.remote(), "weights", 120)
    assert version == 0 and weights
    ray.kill(learner, no_restart=True)
