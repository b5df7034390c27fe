"""Typed, frozen configuration of the learner: optimiser, precision, ZeRO stage, GRPO constants.

Every field is validated in ``__post_init__``; a bad value raises ``ValueError`` naming the
field and saying how to fix it. Nothing is silently changed. Importing this module does not
import deepspeed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from inflvg.policy import PolicyConfig
from inflvg.update import UpdateConfig
from inflvg.validate import at_least, number, one_of


@dataclass(frozen=True)
class LearnerConfig:
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Architecture of the policy being trained; must match the rollout workers' policy."""
    lr: float = 1e-4
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    zero_stage: Literal[0, 1, 2, 3] = 1
    """DeepSpeed ZeRO stage: 0 plain data parallel, 1 shards optimizer state, 2 also gradients,
    3 also parameters. The policy is small: 0 or 1 is fastest, 2/3 only pay off at scale."""
    dtype: Literal["fp32", "bf16"] = "fp32"
    """Parameter/activation precision. With 'bf16' DeepSpeed keeps fp32 master weights, and the
    Plackett-Luce log-probabilities are computed in fp32 either way. 'fp16' is not offered."""
    clip_eps: float = 0.2
    """PPO/GRPO ratio clip: the ratio is clipped to [1 - clip_eps, 1 + clip_eps]."""
    kl_beta: float = 0.0
    """Weight of the k3 KL to a reference policy (the initial weights). 0, as in the released
    InfLVG code, keeps no reference at all."""
    advantage_scale: Literal["group", "batch"] = "group"
    """'group': each (prompt set, scene) group's advantages divided by its own std (GRPO as
    published); 'batch': by one std over the whole batch, so scenes whose reward the selection
    barely moves do not turn their noise into unit-size advantages."""
    epochs: int = 1
    """Passes over each batch of rollouts (1 = strictly on-policy, ratio 1 at the first step)."""
    minibatch_size: int = 64
    """Transitions per optimizer step (DeepSpeed's train_micro_batch_size_per_gpu)."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip; 0 disables clipping."""
    seed: int = 0
    """Seeds the initial weights (when none are given) and the minibatch order of each update."""
    backend: Literal["gloo", "nccl", "auto"] = "auto"
    """torch.distributed backend: 'auto' is nccl when the learner has a GPU, else gloo."""
    num_gpus: float = 0.0
    """GPUs the learner actor asks Ray for: 0 trains on CPU; a fraction shares one GPU. One
    learner process drives at most one device: scale out with more learner actors, not this."""

    def __post_init__(self) -> None:
        if not isinstance(self.policy, PolicyConfig):
            raise ValueError(f"LearnerConfig.policy must be a PolicyConfig, got {type(self.policy).__name__}")
        number(self, "lr", 0, strict=True, fix="a typical value is 1e-4")
        number(self, "weight_decay", 0, fix="use 0 for no decay")
        number(self, "clip_eps", 0, strict=True, fix="a typical value is 0.2")
        number(self, "kl_beta", 0, fix="use 0 to train without a KL term (no reference policy)")
        number(self, "max_grad_norm", 0, fix="use 0 to disable clipping, 1.0 is typical")
        number(self, "num_gpus", 0, fix="use 0 to train on CPU")
        at_least(self, "epochs", 1, "use 1 for a strictly on-policy update")
        at_least(self, "minibatch_size", 1, "a typical value is 64")
        at_least(self, "seed", 0, "any non-negative int")
        one_of(self, "zero_stage", (0, 1, 2, 3), "the DeepSpeed ZeRO stages")
        one_of(self, "advantage_scale", ("group", "batch"))
        if self.dtype == "fp16":
            raise ValueError(
                "LearnerConfig.dtype='fp16' is not supported: DeepSpeed's fp16 path (dynamic loss scaling) "
                "does not run on CPU, and bf16 needs no loss scaling; use 'bf16' or 'fp32'"
            )
        one_of(self, "dtype", ("fp32", "bf16"))
        one_of(self, "backend", ("gloo", "nccl", "auto"))
        if self.num_gpus > 1:
            raise ValueError(
                f"LearnerConfig.num_gpus must be <= 1 (one learner process drives one device), got {self.num_gpus}; "
                "run several learner actors to use more GPUs"
            )
        if self.backend == "nccl" and self.num_gpus == 0:
            raise ValueError("LearnerConfig.backend='nccl' needs a GPU: set num_gpus > 0, or backend='gloo' (or 'auto') on CPU")

    @property
    def uses_gpu(self) -> bool:
        return self.num_gpus > 0

    @property
    def update(self) -> UpdateConfig:
        """The GRPO update's constants, as ``inflvg.update.grpo_update`` takes them."""
        return UpdateConfig(self.epochs, self.minibatch_size, self.clip_eps, self.kl_beta, self.advantage_scale, self.seed)

    def resolved_backend(self, cuda_available: bool) -> str:
        """'gloo' or 'nccl': 'auto' picks nccl only when this learner has a GPU and CUDA is available."""
        if self.backend != "auto":
            return self.backend
        return "nccl" if self.uses_gpu and cuda_available else "gloo"
