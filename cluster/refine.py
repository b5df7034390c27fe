"""Test-time refinement, InfLVG's own mode (arXiv 2505.17574): GRPO on the transitions of one
prompt set, in one process, starting from the amortised policy (or from scratch).

Every step generates G copies of the story as one batch with the same generator noise (the
noise the final video is made with), so they differ only by the policy's sampled selections;
each scene is scored by the reward models, advantages are normalised per scene change across
the G copies, and the clipped GRPO objective updates a private copy of the policy.

    refiner = Refiner(model, world, ctx)
    result = refiner.refine(policy, story, steps=5, seed=0)   # result.policy, result.curve
    scores = refiner.score(frames, story)                     # per scene: alignment, identity, ...
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from inflvg.generator.sample import generate
from inflvg.policy import LearnedStrategy, PolicyConfig, PromptEmbedder, SelectionPolicy
from inflvg.rollout import collate_transitions
from inflvg.world.story import Story
from learner.grpo import SCALES, grpo_loss, per_transition_credit
from reward_actors.actors import ACTORS
from reward_actors.combine import combine
from reward_actors.config import RewardConfig

from .scoring import video_scene_batch


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
    """Frozen generator + in-process reward models; refines a policy for one story at a time."""

    def __init__(self, model, world, ctx, cfg: RefineConfig | None = None):
        self.model, self.world, self.ctx = model, world, ctx
        self.cfg = cfg or RefineConfig()
        self.embed = PromptEmbedder(model)
        self.weights = {fam: w for fam, w in self.cfg.rewards.weights if w > 0}
        self.scorers = {fam: ACTORS[fam](getattr(self.cfg.rewards, fam)).scorer for fam in self.weights}

    def scene_rewards(self, videos: np.ndarray, story: Story) -> tuple[np.ndarray, dict]:
        """videos (B, T, H, W, 3) uint8 of one story -> (combined (B, S), family -> (B, S) scores), NaN where masked."""
        batch = video_scene_batch(list(videos), story, self.world.frames_per_scene)
        results = {fam: scorer.score(batch) for fam, scorer in self.scorers.items()}
        total = combine(results, self.weights).total.reshape(len(videos), -1)
        parts = {fam: np.where(r.valid, r.scores, np.nan).reshape(len(videos), -1) for fam, r in results.items()}
        return total, parts

    def score(self, frames: np.ndarray, story: Story) -> list[dict[str, float]]:
        """One video (T, H, W, 3) uint8 -> per scene {family: score, 'total': combined}, NaN where masked."""
        total, parts = self.scene_rewards(frames[None], story)
        return [{**{fam: float(p[0, s]) for fam, p in parts.items()}, "total": float(total[0, s])} for s in range(total.shape[1])]

    def refine(self, policy: SelectionPolicy | None, story: Story, steps: int, seed: int = 0,
               policy_cfg: PolicyConfig | None = None) -> RefineResult:  # fmt: skip
        """``steps`` GRPO steps on ``story`` -> the refined copy and its reward curve. ``policy``
        None starts from a fresh policy (``policy_cfg``, seeded by ``seed``)."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        policy = self._start(policy, policy_cfg, seed)
        opt = torch.optim.Adam(policy.parameters(), lr=self.cfg.lr)
        result = RefineResult(policy, [])
        for step in range(steps):
            rewards, transitions = self._rollouts(policy, story, seed, step)
            result.curve.append(float(np.nanmean(rewards)))
            result.rewards.append(rewards)
            self._update(policy, opt, rewards, transitions)
        return result

    def _start(self, policy: SelectionPolicy | None, policy_cfg: PolicyConfig | None, seed: int) -> SelectionPolicy:
        if policy is None:
            d = self.model.cfg.d_model
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                policy = SelectionPolicy(policy_cfg or PolicyConfig(d_feature=d, d_prompt=d))
        device = next(self.model.parameters()).device
        return copy.deepcopy(policy).float().to(device).train()

    def _rollouts(self, policy: SelectionPolicy, story: Story, seed: int, step: int) -> tuple[np.ndarray, list]:
        """G sampled videos with the request's noise -> (rewards (G, S), per-video transitions)."""
        g = self.cfg.group_size
        seeds = [int(s) for s in np.random.SeedSequence([seed, step]).generate_state(g)]
        strategy = LearnedStrategy(policy, self.embed, seed=seeds)
        res = generate(self.model, [story] * g, self.world, self.ctx, strategy, seed=seed, shared_noise=True)
        rewards, _ = self.scene_rewards(res.frames, story)
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
