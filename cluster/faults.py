"""Fault injection: kill a rollout, reward or learner actor while a step is using it, the way a
node failure would (``ray.kill(..., no_restart=False)``: Ray restarts it within ``max_restarts``).

    python -m cluster.train --preset debug --faults rollout@1,reward@2,learner@1

kills the first rollout replica 0.3 s into step 1's rollout phase, the first identity replica
(the slowest scorer, else the first family's) 0.2 s into step 2's scoring, and the learner
0.05 s into step 1's update (the driver then resumes from the last checkpoint). ``scorer@0``
makes the artifacts model raise on a quarter of the scenes from step 0 on: they are masked and counted. The run must still finish every step exactly
once with the results of an undisturbed run; the step log and the restart counters show it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

ROLES = {"rollout": 0.3, "reward": 0.2, "learner": 0.05, "scorer": 0.0}  # role -> seconds into its phase when the fault lands
SCORER_FAILURES = 0.25  # 'scorer': from then on the artifacts scorer raises on this share of scenes (by content hash)


@dataclass(frozen=True)
class Fault:
    role: str  # 'rollout', 'reward', 'learner' or 'scorer'
    step: int  # driver step (0-based) during which the actor is killed


def parse_faults(spec: str | None) -> tuple[Fault, ...]:
    """'rollout@1,reward@2' -> Faults; None or '' -> none."""
    faults = []
    for item in filter(None, (spec or "").split(",")):
        role, _, step = item.strip().partition("@")
        if role not in ROLES or not step.isdigit():
            raise ValueError(f"--faults entry {item!r} must look like ROLE@STEP with ROLE one of {', '.join(ROLES)}, e.g. rollout@1")
        faults.append(Fault(role, int(step)))
    return tuple(faults)


class FaultInjector:
    """``with injector.during(role, step):`` around a phase kills that role's actor mid-phase
    if a fault is planned there; ``killed`` lists (role, step) of the kills that happened."""

    def __init__(self, faults: tuple[Fault, ...], targets: Callable[[], dict[str, Any]]):
        """``targets()``: role -> the Ray actor handle to kill now (ray's stubs type a handle as ``ActorHandle[C] | type[C]``),
        asked at each kill: a restarted hybrid world has new actors."""
        self.faults, self.targets = set(faults), targets
        self.killed: list[tuple[str, int]] = []

    @classmethod
    def for_roles(cls, faults: tuple[Fault, ...], roles) -> FaultInjector:
        """Aimed at the first rollout replica, the first identity replica (the slowest scorer, else
        the first family's) and the learner of ``roles`` (a ``cluster.roles.Roles``; hybrid: rank 0 for both)."""
        def targets() -> dict[str, Any]:
            scorer = roles.rewards.get("identity") or next(iter(roles.rewards.values()))
            handles = {**roles.fault_targets(), "reward": scorer.handles[0]}
            if "artifacts" in roles.rewards:
                handles["scorer"] = roles.rewards["artifacts"].handles[0]
            return handles

        return cls(faults, targets)

    @contextmanager
    def during(self, role: str, step: int):
        if Fault(role, step) not in self.faults:
            yield
            return
        self.faults.discard(Fault(role, step))  # once: a step run again after a restore is not hit again
        timer = threading.Timer(ROLES[role], self._kill, args=(role, step))
        timer.start()
        try:
            yield
        finally:
            timer.join()

    def _kill(self, role: str, step: int) -> None:
        import ray

        if role == "scorer":  # not a kill: the model starts raising on some scenes
            ray.get(self.targets()[role].fail_scenes.remote(SCORER_FAILURES))
            print(f"fault injected: the artifacts scorer raises on {SCORER_FAILURES:.0%} of scenes from step {step}", flush=True)
        else:
            ray.kill(self.targets()[role], no_restart=False)
            print(f"fault injected: killed the {role} actor during step {step}", flush=True)
        self.killed.append((role, step))
