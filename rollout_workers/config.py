"""Typed, frozen configuration of the rollout workers (the actor receives only this sub-config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from inflvg.protocol import BACKENDS
from inflvg.validate import at_least, number, one_of


@dataclass(frozen=True)
class RolloutConfig:
    generator: str = "storyworld"
    """The generator by name (``inflvg.protocol.BACKENDS``: storyworld, wan-tiny, wan-1.3b)."""
    generator_weights: str | None = None
    """Path of the frozen generator's weights (local); None: its shipped ones (random for the Wan presets)."""
    group_size: int = 4
    """G: rollouts per prompt set. They share the generator's noise and differ by their selections."""
    budget_k: int | None = None
    """Long-term tokens the policy selects at each scene change; None: the weights' own ContextConfig."""
    replicas: int = 1
    """Rollout actors in the group."""
    num_cpus: float = 1.0
    """CPUs Ray reserves for each actor."""
    num_gpus: float = 0.0
    """GPUs Ray reserves for each actor; > 0 runs the generator and policy on CUDA."""
    max_restarts: int = 2
    """Times Ray restarts a dead actor (its work is re-issued once by the group)."""
    threads: int = 1
    """torch intra-op threads inside the actor: more than the reserved cores makes it much slower."""
    mode: Literal["trajectory", "tree"] = "trajectory"
    """How a group is sampled. 'trajectory': G whole videos from the same noise, each following its own
    selections (a scene's baseline compares actions taken from different histories). 'tree': at every
    scene change G branches of the next scene from one shared history (InfLVG's grouping), which then
    continues with branch 0: a sample of the acting policy, so the history stays on-policy and needs no
    reward before the next scene (the best-rewarded branch would). Same generated frames per group."""
    frames_short_side: int | None = None
    """Frames leave the worker (for the rewards and the sample videos) with their shorter side at most this
    many pixels, resized with antialiasing; None: at the generator's size. 224 is what CLIP-sized reward
    models read (the alignment reward resizes to its model's input anyway), and cuts a 480 x 832 frame's
    bytes 4.6x; the identity reward's face detector reads the same frames."""
    call_timeout_s: float = 1800.0
    """Seconds a rollout call (one replica's share of a step) or a weight push may take before the step stops with an error naming it."""

    def __post_init__(self) -> None:
        one_of(self, "generator", tuple(BACKENDS))
        one_of(self, "mode", ("trajectory", "tree"))
        if self.generator_weights is not None and (not isinstance(self.generator_weights, str) or not self.generator_weights):
            raise ValueError(
                f"RolloutConfig.generator_weights must be a non-empty path string or None (the shipped weights), "
                f"got {self.generator_weights!r}"
            )
        at_least(self, "group_size", 2, "GRPO normalises rewards inside a group, so it needs G >= 2")
        if self.budget_k is not None:
            at_least(self, "budget_k", 1, "or None to use the generator weights' own budget")
        at_least(self, "replicas", 1, "set the number of rollout actors")
        at_least(self, "max_restarts", 0, "-1 (forever) is not allowed: a crash loop must end")
        at_least(self, "threads", 1, "use 1 per reserved CPU core")
        if self.frames_short_side is not None:
            at_least(self, "frames_short_side", 16, "or None to send frames at the generator's size; 224 suits CLIP-sized rewards")
        number(self, "num_cpus")
        number(self, "num_gpus")
        number(self, "call_timeout_s", 1, fix="give the seconds a rollout call may take, e.g. 1800")
