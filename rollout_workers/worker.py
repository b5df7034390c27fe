"""The rollout worker: the frozen generator plus a replica of the selection policy -> GRPO groups.

For each prompt set, G videos are generated with the current policy. They share the generator's
noise and differ only by the policy's sampled selections (InfLVG, arXiv 2505.17574, section 3).
The group is sampled by ``inflvg.sampling.sample_group``, as test-time refinement samples it
(one batch with ``shared_noise``, seeds from the request, never from the worker, so a prompt
set gives the same rollouts on whichever replica runs it). The worker speaks to the generator
only through ``inflvg.protocol``; which one is ``RolloutConfig.generator``.

Rewards are not computed here: ``scene_rewards`` is left NaN and ``scores`` empty; the driver
fills them in from the reward actors.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import torch

from inflvg.policy import PolicyConfig, PromptEmbedder, SelectionPolicy
from inflvg.prompts import PromptSet
from inflvg.protocol import load_backend
from inflvg.rollout import Rollout
from inflvg.sampling import request_seeds, sample_group
from inflvg.video import shrink

from .config import RolloutConfig


class NoWeightsError(RuntimeError):
    """Raised by a worker asked to act before its first ``set_weights`` (e.g. just restarted by Ray)."""


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

    def set_weights(self, version: int, state_dict: dict, rollback: bool = False) -> bool:
        """Load policy weights tagged ``version``. An older version is refused (False, weights kept):
        a late push must never roll the replica back, unless ``rollback`` says the learner itself
        went back (restored from a checkpoint). The same version is a no-op (True)."""
        _check_seed("version", version)
        if rollback and version < self._version:
            self._version = -1
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
            noise, sel = request_seeds(noise_seed, selection_seed, index, self.cfg.group_size)
            out += sample_group(self.gen, self.policy, self.embed, ps, index, noise, sel, self.ctx, version=self._version,
                                tree=self.cfg.mode == "tree")  # fmt: skip
        if self.cfg.frames_short_side is not None:
            out = [replace(r, frames=None if r.frames is None else shrink(r.frames, self.cfg.frames_short_side)) for r in out]
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
