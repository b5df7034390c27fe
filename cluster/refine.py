"""Test-time refinement, InfLVG's own mode (arXiv 2505.17574): GRPO on the transitions of one
prompt set, in one process, starting from the amortised policy (or from scratch).

Every step generates G copies of the prompt set as one batch with the same generator noise (the
noise the final video is made with), so they differ only by the policy's sampled selections;
each scene is scored by the reward models, advantages are normalised per scene change across
the G copies, and the clipped GRPO objective updates a private copy of the policy.

    refiner = Refiner(gen)                                        # a backend (inflvg.protocol.Generator)
    result = refiner.refine(policy, prompt_set, steps=5, seed=0)  # result.policy, result.curve
    scores = refiner.score(frames, prompt_set)                    # per scene: alignment, identity, ...
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from inflvg.config import ContextConfig
from inflvg.generate import generate
from inflvg.policy import LearnedStrategy, PolicyConfig, PromptEmbedder, SelectionPolicy
from inflvg.prompts import PromptSet
from inflvg.protocol import Generator
from inflvg.rollout import collate_transitions
from learner.grpo import SCALES, grpo_loss, per_transition_credit
from reward_actors.actors import ACTORS
from reward_actors.combine import combine
from reward_actors.config import RewardConfig
from reward_actors.history import video_scene_batch


@dataclass(frozen=True)
class RefineConfig:
    group_size: int = 8
    """G: sampled videos per step; more gives steadier advantages at a linear cost."""
    lr: float = 1e-3
    """Adam learning rate of the per-request copy (higher than amortised training: one prompt set)."""
    epochs: int = 2
    """Clipped passes over each step's transitions (the ratio clip keeps later passes on-policy)."""
    clip_eps: float = 0.2
    advantage_scale: str = "batch"
    """'batch' or 'group': see ``learner.grpo.group_advantages``."""
    rewards: RewardConfig = field(default_factory=RewardConfig)

    def __post_init__(self) -> None:
        for name, low in (("group_size", 2), ("epochs", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"RefineConfig.{name} must be an integer >= {low}, got {value!r}")
        if self.advantage_scale not in SCALES:
            raise ValueError(f"RefineConfig.advantage_scale must be one of {SCALES}, got {self.advantage_scale!r}")
        for name in ("lr", "clip_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"RefineConfig.{name} must be a number > 0, got {value!r}")


@dataclass
class RefineResult:
    policy: SelectionPolicy  # the refined copy (the input policy is left unchanged)
    curve: list[float]  # mean combined reward of the G sampled videos, one entry per step
    rewards: list[np.ndarray] = field(default_factory=list)  # per step: (G, S) combined reward per scene


class Refiner:
    """Frozen generator + in-process reward models; refines a policy for one prompt set at a time.
    ``frames_per_scene`` and ``ctx`` default to the backend's own."""

    def __init__(self, gen: Generator, frames_per_scene: int | None = None, ctx: ContextConfig | None = None,
                 cfg: RefineConfig | None = None):  # fmt: skip
        self.gen, self.ctx = gen, ctx or gen.spec.context
        self.frames_per_scene = frames_per_scene or gen.spec.frames_per_scene
        self.cfg = cfg or RefineConfig()
        self.embed = PromptEmbedder(gen)
        self.weights = {fam: w for fam, w in self.cfg.rewards.weights if w > 0}
        self.scorers = {fam: ACTORS[fam](getattr(self.cfg.rewards, fam)).scorer for fam in self.weights}

    def scene_rewards(self, videos: np.ndarray, ps: PromptSet) -> tuple[np.ndarray, dict]:
        """videos (B, T, H, W, 3) uint8 of one prompt set -> (combined (B, S), family -> (B, S) scores), NaN where masked."""
        batch = video_scene_batch(list(videos), ps, self.frames_per_scene)
        results = {fam: scorer.score(batch) for fam, scorer in self.scorers.items()}
        total = combine(results, self.weights).total.reshape(len(videos), -1)
        parts = {fam: np.where(r.valid, r.scores, np.nan).reshape(len(videos), -1) for fam, r in results.items()}
        return total, parts

    def score(self, frames: np.ndarray, ps: PromptSet) -> list[dict[str, float]]:
        """One video (T, H, W, 3) uint8 -> per scene {family: score, 'total': combined}, NaN where masked."""
        total, parts = self.scene_rewards(frames[None], ps)
        return [{**{fam: float(p[0, s]) for fam, p in parts.items()}, "total": float(total[0, s])} for s in range(total.shape[1])]

    def refine(self, policy: SelectionPolicy | None, ps: PromptSet, steps: int, seed: int = 0,
               policy_cfg: PolicyConfig | None = None) -> RefineResult:  # fmt: skip
        """``steps`` GRPO steps on prompt set ``ps`` -> the refined copy and its reward curve. ``policy``
        None starts from a fresh policy (``policy_cfg``, seeded by ``seed``)."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        policy = self._start(policy, policy_cfg, seed)
        opt = torch.optim.Adam(policy.parameters(), lr=self.cfg.lr)
        result = RefineResult(policy, [])
        for step in range(steps):
            rewards, transitions = self._rollouts(policy, ps, seed, step)
            result.curve.append(float(np.nanmean(rewards)))
            result.rewards.append(rewards)
            self._update(policy, opt, rewards, transitions)
        return result

    def _start(self, policy: SelectionPolicy | None, policy_cfg: PolicyConfig | None, seed: int) -> SelectionPolicy:
        if policy is None:
            spec = self.gen.spec
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                policy = SelectionPolicy(policy_cfg or PolicyConfig(d_feature=spec.d_feature, d_prompt=spec.d_prompt))
        device = self.gen.device
        return copy.deepcopy(policy).float().to(device).train()

    def _rollouts(self, policy: SelectionPolicy, ps: PromptSet, seed: int, step: int) -> tuple[np.ndarray, list]:
        """G sampled videos with the request's noise -> (rewards (G, S), per-video transitions)."""
        g = self.cfg.group_size
        seeds = [int(s) for s in np.random.SeedSequence([seed, step]).generate_state(g)]
        strategy = LearnedStrategy(policy, self.embed, seed=seeds)
        res = generate(self.gen, [ps] * g, strategy, seed=seed, frames_per_scene=self.frames_per_scene, ctx=self.ctx, shared_noise=True)
        rewards, _ = self.scene_rewards(res.frames, ps)
        return rewards, strategy.video_transitions()

    def _update(self, policy: SelectionPolicy, opt: torch.optim.Optimizer, rewards: np.ndarray, videos: list) -> None:
        rewards_t = torch.as_tensor(rewards, dtype=torch.float32)[None]  # (1, G, S)
        adv, excluded = per_transition_credit(rewards_t, scale=self.cfg.advantage_scale)
        transitions = [t for v in videos for t in v]
        if not transitions:
            return
        index = torch.tensor([(g, t.scene) for g, v in enumerate(videos) for t in v])
        a, keep = adv[0, index[:, 0], index[:, 1]], ~excluded[0, index[:, 0], index[:, 1]]
        if not keep.any():
            return
        device = next(policy.parameters()).device
        batch = collate_transitions([t for t, k in zip(transitions, keep.tolist()) if k])
        feats, tokens, mask, valid = (x.to(device) for x in (batch.features, batch.prompt_tokens, batch.prompt_mask, batch.valid))
        for _ in range(self.cfg.epochs):
            logits = policy(feats, tokens, mask, valid)
            logp = policy.log_prob(logits, batch.chosen.to(device), valid)
            loss, _ = grpo_loss(logp, batch.logp_old.to(device), a[keep].to(device), clip_eps=self.cfg.clip_eps)
            opt.zero_grad()
            loss.backward()
            opt.step()
