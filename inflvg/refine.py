"""Test-time refinement, InfLVG's own mode (arXiv 2505.17574): GRPO on the transitions of one
prompt set, starting from the amortised policy (or from scratch), with the training update.

Every step samples a group exactly as a rollout worker does (``inflvg.sampling.sample_group``:
G copies of the prompt set in one batch, with the noise the final video is made with, so they
differ only by the policy's sampled selections), has each scene scored, and takes the learner's
update (``inflvg.update.grpo_update``: per-scene advantages across the G copies, clipped
minibatch steps) on a private copy of the policy, with AdamW and gradient clipping as the
learner's DeepSpeed engine runs them.

The reward models are not this module's: ``scorer`` is anything with
``scene_rewards(videos (B, T, H, W, 3) uint8, prompt_set, frames_per_scene) -> (combined (B, S), parts)``
(``reward_actors.videos.VideoScorer`` in one process; a Serve deployment handle in serving).

    refiner = Refiner(gen, scorer)
    result = refiner.refine(policy, prompt_set, steps=5, seed=0)  # result.policy, result.curve
    scores = refiner.score(frames, prompt_set)                    # per scene: alignment, identity, ...
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from .config import ContextConfig
from .policy import PolicyConfig, PromptEmbedder, SelectionPolicy
from .prompts import PromptSet
from .protocol import Generator
from .rollout import Rollout
from .sampling import rollout_selection_seed, sample_group
from .update import UpdateConfig, grpo_update
from .validate import at_least, number


def _frames(r: Rollout) -> np.ndarray:
    """The video of a sampled rollout (``sample_group`` always keeps it)."""
    if r.frames is None:
        raise ValueError(f"rollout {r.rollout_index} of group {r.group_id} carries no frames to score")
    return r.frames


class SceneScorer(Protocol):
    def scene_rewards(self, videos: np.ndarray, ps: PromptSet, frames_per_scene: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """videos (B, T, H, W, 3) uint8 of one prompt set -> (combined (B, S), family -> (B, S)), NaN where masked."""
        ...


@dataclass(frozen=True)
class RefineConfig:
    group_size: int = 8
    """G: sampled videos per step; more gives steadier advantages at a linear cost."""
    lr: float = 1e-3
    """AdamW learning rate of the per-request copy (higher than amortised training: one prompt set)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip, as the learner's; 0 disables clipping."""
    update: UpdateConfig = field(default_factory=lambda: UpdateConfig(epochs=2, advantage_scale="batch"))
    """The GRPO update's constants (the learner's update, one prompt set at a time)."""

    def __post_init__(self) -> None:
        at_least(self, "group_size", 2, "GRPO compares G >= 2 videos of one prompt set")
        number(self, "lr", 0, strict=True)
        number(self, "weight_decay")
        number(self, "max_grad_norm")


@dataclass
class RefineResult:
    policy: SelectionPolicy  # the refined copy (the input policy is left unchanged)
    curve: list[float]  # mean combined reward of the G sampled videos, one entry per step
    rewards: list[np.ndarray] = field(default_factory=list)  # per step: (G, S) combined reward per scene


class TorchUpdate:
    """The learner's update outside DeepSpeed: ``grpo_update`` with a torch AdamW stepping a
    policy, gradients clipped to ``max_grad_norm`` as DeepSpeed clips them."""

    def __init__(self, policy: SelectionPolicy, cfg: RefineConfig):
        self.policy, self.cfg = policy, cfg
        self.opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def __call__(self, rollouts: list, version: int) -> dict[str, float]:
        """One update on complete groups of scored rollouts -> the update's metrics."""
        policy = self.policy
        return grpo_update(rollouts, lambda mb: policy(mb.features, mb.prompt_tokens, mb.prompt_mask, mb.valid), self._step,
                           self.cfg.update, version, next(policy.parameters()).device)  # fmt: skip

    def _step(self, loss: torch.Tensor) -> float:
        self.opt.zero_grad()
        loss.backward()
        params = [p for p in self.policy.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else float("inf"))
        self.opt.step()
        return float(norm)


class Refiner:
    """Frozen generator + a scorer; refines a policy for one prompt set at a time, at the
    request's ``frames_per_scene`` and budget (``ctx``; default: the backend's own)."""

    def __init__(self, gen: Generator, scorer: SceneScorer, cfg: RefineConfig | None = None):
        self.gen, self.scorer, self.cfg = gen, scorer, cfg or RefineConfig()
        self.embed = PromptEmbedder(gen)

    def score(self, frames: np.ndarray, ps: PromptSet, frames_per_scene: int | None = None) -> list[dict[str, float]]:
        """One video (T, H, W, 3) uint8 -> per scene {family: score, 'total': combined}, NaN where masked."""
        total, parts = self.scorer.scene_rewards(frames[None], ps, frames_per_scene or self.gen.spec.frames_per_scene)
        return [{**{fam: float(p[0, s]) for fam, p in parts.items()}, "total": float(total[0, s])} for s in range(total.shape[1])]

    def refine(self, policy: SelectionPolicy | None, ps: PromptSet, steps: int, seed: int = 0, policy_cfg: PolicyConfig | None = None,
               frames_per_scene: int | None = None, ctx: ContextConfig | None = None) -> RefineResult:  # fmt: skip
        """``steps`` GRPO steps on prompt set ``ps`` -> the refined copy and its reward curve. ``policy``
        None starts from a fresh policy (``policy_cfg``, seeded by ``seed``)."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        fps, ctx = frames_per_scene or self.gen.spec.frames_per_scene, ctx or self.gen.spec.context
        policy = self._start(policy, policy_cfg, seed)
        update = TorchUpdate(policy, self.cfg)
        result = RefineResult(policy, [])
        for step in range(steps):
            sel = [rollout_selection_seed(seed, step, g) for g in range(self.cfg.group_size)]
            group = sample_group(self.gen, policy, self.embed, ps, 0, seed, sel, ctx, fps, version=step)
            rewards, _ = self.scorer.scene_rewards(np.stack([_frames(r) for r in group]), ps, fps)
            for r, row in zip(group, rewards, strict=True):
                r.scene_rewards = row.astype(np.float32)
            result.curve.append(float(np.nanmean(rewards)))
            result.rewards.append(rewards)
            update(group, version=step)
        return result

    def _start(self, policy: SelectionPolicy | None, policy_cfg: PolicyConfig | None, seed: int) -> SelectionPolicy:
        if policy is None:
            spec = self.gen.spec
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                policy = SelectionPolicy(policy_cfg or PolicyConfig(d_feature=spec.d_feature, d_prompt=spec.d_prompt))
        return copy.deepcopy(policy).float().to(self.gen.device).train()
