"""The learner's faults: every driver call to it has a timeout, and a learner that dies is
restarted by Ray (``ServiceConfig.learner_max_restarts``) and resumed from the run's last
checkpoint within the same job.

Each step's seeds and prompt sets are functions of the step alone, so the steps after that
checkpoint run again and give what they gave the first time: no step is lost or doubled, and
the final weights equal an undisturbed run's.
"""

from __future__ import annotations

from typing import Any


class LearnerLost(RuntimeError):
    """The learner actor died during a call, or before it (Ray restarts it while restarts remain)."""


class LearnerRestarted(RuntimeError):
    """Raised by a learner that Ray restarted, to a call made before the driver saw the restart
    (``cluster.fence``)."""


def learner_get(ref, what: str, timeout_s: float) -> Any:
    """``ray.get`` of a learner call, ``what`` naming it: death -> LearnerLost; no answer within
    ``timeout_s`` -> TimeoutError saying so and what to change."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    try:
        return ray.get(ref, timeout=timeout_s)
    except RayActorError as e:
        raise LearnerLost(f"the learner died during {what}: {type(e).__name__}") from e
    except LearnerRestarted as e:  # Ray raises the actor's exception as a subclass of it
        raise LearnerLost(f"the learner died before {what}: Ray restarted it, without the run's state") from e
    except GetTimeoutError as e:
        raise TimeoutError(f"the learner did not answer {what} within {timeout_s:.0f} s (ServiceConfig.call_timeout_s); "
                           f"look at its log, or raise the timeout for a slower cluster") from e  # fmt: skip


def wait_for_learner(learner, timeout_s: float) -> None:
    """Block until Ray has restarted the learner (its constructor ran), then lift its fence
    (``cluster.fence``); a learner dead for good (no restarts left) raises RuntimeError."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    try:  # Ray resends this call until the actor is back, or gives up when it is dead for good
        ray.get(learner.rejoin.options(max_task_retries=-1).remote(), timeout=timeout_s)
    except (RayActorError, GetTimeoutError) as e:
        raise RuntimeError(f"the learner did not come back ({type(e).__name__}): ServiceConfig.learner_max_restarts "
                           f"are used up or it cannot start; the run can resume later from its last checkpoint (--resume auto)") from e  # fmt: skip
