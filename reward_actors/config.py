"""Typed, frozen configuration of the reward actors; each actor receives only its own sub-config."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from inflvg.validate import at_least, boolean, number, positive_int


@dataclass(frozen=True)
class ActorResources:
    """What Ray reserves for each replica of a reward actor, shared by every family's config."""

    replicas: int = 1
    """Ray actors scoring this family side by side (calls are spread over them)."""
    num_cpus: float = 1.0
    """CPUs Ray reserves for each replica."""
    num_gpus: float = 0.0
    """GPUs Ray reserves for each replica; > 0 runs its model on CUDA."""
    max_restarts: int = 2
    """Ray restarts a crashed replica this many times; -1 (forever) is refused: a crash loop must end."""
    call_timeout_s: float = 1800.0
    """Seconds one scoring call may take before the step stops with an error naming the family and this field."""
    continue_if_lost: bool = False
    """If a replica dies again after its restart: False stops the job with an error naming the family;
    True trains on without it, its scenes masked and counted (reward_failures, masked_<family>)."""

    def __post_init__(self) -> None:
        positive_int(self, "replicas")
        number(self, "num_cpus")
        number(self, "num_gpus")
        at_least(self, "max_restarts", 0, "-1 (forever) is not allowed: a crash loop must end")
        boolean(self, "continue_if_lost")
        number(self, "call_timeout_s", 1, fix="give the seconds a scoring call may take, e.g. 1800")


@dataclass(frozen=True)
class AlignmentConfig(ActorResources):
    model_name: str | None = None
    """open_clip architecture name (e.g. 'ViT-L-14') or a JSON model config; None: the shipped StoryWorld model."""
    checkpoint: str | None = None
    """Local checkpoint path for model_name; required when model_name is set (nothing is downloaded)."""
    frames_per_scene: int = 8
    """Frames of each scene scored against its prompt, evenly spaced over the scene."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model_name is not None and self.checkpoint is None:
            raise ValueError("AlignmentConfig.checkpoint is required with model_name: pass a local checkpoint path")


@dataclass(frozen=True)
class IdentityConfig(ActorResources):
    recognition: str | None = None
    """ONNX recognition model or insightface model-pack folder; None: the shipped StoryWorld model."""
    detector: str = "storyworld"
    """'storyworld' (analytic subject detector) or a local insightface model-pack folder."""
    frames_new: int = 8
    """At most this many frames of the new scene are compared with its history."""
    frames_history: int = 8
    """At most this many frames of the earlier scenes about the same subject (the history) are compared."""


@dataclass(frozen=True)
class ArtifactConfig(ActorResources):
    calibration: str | None = None
    """Calibration JSON of the no-model score; None: the shipped one."""
    vlm: str | None = None
    """Local path of a transformers vision-language model to use as the judge instead."""


@dataclass(frozen=True)
class RewardConfig:
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    """Prompt alignment: does each scene show what its prompt says (a CLIP score)?"""
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    """Identity consistency: does a returning character look as in its earlier scenes (ArcFace cosine of the subject)?"""
    artifacts: ArtifactConfig = field(default_factory=ArtifactConfig)
    """Visual artifacts: how clean each scene's frames are (a calibrated no-model score, or a VLM judge)."""
    weights: tuple[tuple[str, float], ...] = (("alignment", 0.25), ("identity", 1.0), ("artifacts", 0.5))
    """(family, weight) pairs of the combined reward. Alignment weighs least by default: every
    scene's prompt names its background, so the context selection barely moves alignment, and
    inside a GRPO group its differences are mostly scorer noise (on StoryWorld the generator
    draws the prompted background in every scene whatever it keeps)."""
    normalise_components: bool = False
    """Normalise each component within its GRPO group before summing."""

    def __post_init__(self) -> None:
        families = {f.name for f in fields(self) if f.name in ("alignment", "identity", "artifacts")}
        for fam, w in self.weights:
            if fam not in families:
                raise ValueError(f"RewardConfig.weights names unknown family {fam!r}; use {sorted(families)}")
            if w < 0:
                raise ValueError(f"RewardConfig.weights[{fam!r}] must be >= 0, got {w}")
