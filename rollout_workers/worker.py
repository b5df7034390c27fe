"""The rollout worker: the frozen generator plus a replica of the selection policy -> GRPO groups.

For each prompt set, G videos are generated with the current policy. They share the generator's
noise and differ only by the policy's sampled selections (InfLVG, arXiv 2505.17574, section 3).
The G copies of the prompt set are generated as one batch with ``shared_noise`` (1.5x faster
than one by one on a CPU core), each row with its own selection seed. The worker speaks to the
generator only through ``inflvg.protocol``; which one is ``RolloutConfig.generator``.

Seeds are derived per prompt set from the call's base seeds and the prompt set's position in
the whole request (``first_index + i``), never from the worker, so a prompt set gives the same
rollouts on whichever replica runs it, and every group can be reproduced from its records:

    seeds = [r.selection_seed for r in group]   # in rollout_index order
    generate(gen, [prompt_set] * G, LearnedStrategy(policy, embed, seed=seeds), seed=group[0].noise_seed, ctx=ctx,
             shared_noise=True).frames[g]      # == group[g].frames

Rewards are not computed here: ``scene_rewards`` is left NaN and ``scores`` empty; the driver
fills them in from the reward actors.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import torch

from inflvg.generate import GenerationResult, generate
from inflvg.policy import LearnedStrategy, PolicyConfig, PromptEmbedder, SelectionPolicy
from inflvg.prompts import PromptSet
from inflvg.protocol import load_backend
from inflvg.rollout import Rollout

from .config import RolloutConfig

GREEDY_SEED = -1  # Rollout.selection_seed of a greedy (evaluation) rollout: no selection noise


class NoWeightsError(RuntimeError):
    """Raised by a worker asked to act before its first ``set_weights`` (e.g. just restarted by Ray)."""


def group_noise_seed(noise_seed: int, index: int) -> int:
    """Generator noise seed of the group of the prompt set at position ``index`` of a request."""
    return int(np.random.SeedSequence([noise_seed, index]).generate_state(1)[0])


def rollout_selection_seed(selection_seed: int, index: int, rollout_index: int) -> int:
    """Seed of the policy's Gumbel noise for rollout ``rollout_index`` of prompt set ``index``."""
    return int(np.random.SeedSequence([selection_seed, index, rollout_index]).generate_state(1)[0])


def _check_seed(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


class RolloutWorker:
    """Frozen generator (eval, no grad) + policy replica. Plain class: ``RolloutGroup`` wraps it
    with ``ray.remote``; tests and single-process tools use it directly.

    The policy acts only after ``set_weights``: every replica must act with the same, versioned
    weights, so a fresh worker holds version -1 and refuses to roll out."""

    def __init__(self, cfg: RolloutConfig, policy_cfg: PolicyConfig):
        torch.set_num_threads(cfg.threads)  # more threads than reserved cores is 10-60x slower
        self.cfg = cfg
        self.device = "cuda" if cfg.num_gpus > 0 else "cpu"
        self.gen = load_backend(cfg.generator, cfg.generator_weights, self.device)
        ctx = self.gen.spec.context
        self.ctx = ctx if cfg.budget_k is None else replace(ctx, budget_k=cfg.budget_k)
        spec = self.gen.spec
        if (policy_cfg.d_feature, policy_cfg.d_prompt) != (spec.d_feature, spec.d_prompt):
            raise ValueError(
                f"PolicyConfig.d_feature and d_prompt must equal the generator's feature and prompt widths "
                f"({spec.d_feature}, {spec.d_prompt}), got ({policy_cfg.d_feature}, {policy_cfg.d_prompt}); "
                f"build PolicyConfig(d_feature={spec.d_feature}, d_prompt={spec.d_prompt}, ...)"
            )
        self.policy = SelectionPolicy(policy_cfg).to(self.device).eval().requires_grad_(False)
        self.embed = PromptEmbedder(self.gen)
        self._version = -1

    def set_weights(self, version: int, state_dict: dict) -> bool:
        """Load policy weights tagged ``version``. An older version is refused (False, weights kept):
        a late push must never roll the replica back. The same version is a no-op (True)."""
        _check_seed("version", version)
        if version < self._version:
            return False
        if version > self._version:
            self.policy.load_state_dict(state_dict)  # strict: weights of another PolicyConfig fail loudly
            self._version = int(version)
        return True

    def version(self) -> int:
        """Version of the weights the policy acts with; -1 before the first ``set_weights``."""
        return self._version

    def pid(self) -> int:
        return os.getpid()

    def rollout(self, prompt_sets: list[PromptSet], noise_seed: int, selection_seed: int, first_index: int = 0) -> list[Rollout]:
        """G sampled rollouts per prompt set -> list of len(prompt_sets) * G Rollouts, grouped by
        prompt set in input order, rollout_index 0..G-1 inside each group.

        ``first_index``: position of ``prompt_sets[0]`` in the whole request (the group splits a
        request over replicas); it sets each prompt set's seeds and its ``group_id``."""
        self._check_call(prompt_sets, noise_seed, selection_seed, first_index)
        out = []
        for i, ps in enumerate(prompt_sets):
            index = first_index + i
            noise, g_size = group_noise_seed(noise_seed, index), self.cfg.group_size
            seeds = [rollout_selection_seed(selection_seed, index, g) for g in range(g_size)]
            strategy = LearnedStrategy(self.policy, self.embed, seed=seeds)
            res = generate(self.gen, [ps] * g_size, strategy, seed=noise, ctx=self.ctx, shared_noise=True)
            transitions = strategy.video_transitions() or [[]] * g_size
            out += [self._record(ps, index, g, noise, seeds[g], res, transitions[g]) for g in range(g_size)]
        return out

    def greedy_rollout(self, prompt_sets: list[PromptSet], noise_seed: int, first_index: int = 0) -> list[Rollout]:
        """One greedy (top-K) rollout per prompt set, for evaluation -> len(prompt_sets) Rollouts.

        Same noise seed as the sampled group of the same (noise_seed, index), so the two compare
        paired; selection_seed is ``GREEDY_SEED`` and no transitions are recorded."""
        self._check_call(prompt_sets, noise_seed, 0, first_index)
        out = []
        for i, ps in enumerate(prompt_sets):
            index = first_index + i
            noise = group_noise_seed(noise_seed, index)
            strategy = LearnedStrategy(self.policy, self.embed, greedy=True, record=False)
            res = generate(self.gen, [ps], strategy, seed=noise, ctx=self.ctx)
            out.append(self._record(ps, index, 0, noise, GREEDY_SEED, res, []))
        return out

    def _check_call(self, prompt_sets, noise_seed, selection_seed, first_index) -> None:
        if self._version < 0:
            raise NoWeightsError("the rollout worker has no policy weights yet: call set_weights(version, state_dict) first")
        _check_seed("noise_seed", noise_seed)
        _check_seed("selection_seed", selection_seed)
        _check_seed("first_index", first_index)
        for item in prompt_sets:
            if not isinstance(item, PromptSet):
                raise ValueError(f"each prompt set must be an inflvg.prompts.PromptSet, got {item!r:.80}")

    def _record(self, ps: PromptSet, index: int, g: int, noise: int, sel: int, res: GenerationResult,
                transitions: list) -> Rollout:  # fmt: skip
        """Video ``g`` of ``res`` -> Rollout; rewards NaN until the driver scores it."""
        return Rollout(
            prompt_set_id=ps.id, group_id=index, rollout_index=g, policy_version=self._version,
            noise_seed=noise, selection_seed=sel,
            scene_rewards=np.full(ps.n_scenes, np.nan, np.float32),
            transitions=transitions, prompts=list(ps.scenes),
            frames=res.frames[g].copy() if self.cfg.keep_frames else None,  # (T, H, W, 3) uint8
        )  # fmt: skip
