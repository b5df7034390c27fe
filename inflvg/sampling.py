"""One GRPO group of rollouts: G videos of one prompt set with the same generator noise, each
with its own selection seed, generated as one batch (InfLVG, arXiv 2505.17574, section 3). The
rollout workers and test-time refinement both sample through ``sample_group``, so a group is the
same wherever it is made.

Seeds are derived from a request's base seeds and the prompt set's position in the request
(``index``), never from the process, so any group can be reproduced from its records:

    seeds = [r.selection_seed for r in group]   # in rollout_index order
    generate(gen, [prompt_set] * G, LearnedStrategy(policy, embed, seed=seeds), seed=group[0].noise_seed,
             ctx=ctx, shared_noise=True).frames[g]   # == group[g].frames
"""

from __future__ import annotations

import numpy as np

from .config import ContextConfig
from .generate import generate
from .policy import LearnedStrategy, PromptEmbedder, SelectionPolicy
from .prompts import PromptSet
from .protocol import Generator
from .rollout import Rollout


def group_noise_seed(noise_seed: int, index: int) -> int:
    """Generator noise seed of the group of the prompt set at position ``index`` of a request."""
    return int(np.random.SeedSequence([noise_seed, index]).generate_state(1)[0])


def rollout_selection_seed(selection_seed: int, index: int, rollout_index: int) -> int:
    """Seed of the policy's Gumbel noise for rollout ``rollout_index`` of prompt set ``index``."""
    return int(np.random.SeedSequence([selection_seed, index, rollout_index]).generate_state(1)[0])


def request_seeds(noise_seed: int, selection_seed: int, index: int, group_size: int) -> tuple[int, list[int]]:
    """(generator noise seed, G selection seeds) of the group at position ``index`` of a request."""
    return group_noise_seed(noise_seed, index), [rollout_selection_seed(selection_seed, index, g) for g in range(group_size)]


def sample_group(gen: Generator, policy: SelectionPolicy, embed: PromptEmbedder, ps: PromptSet, index: int, noise: int,
                 sel: list[int], ctx: ContextConfig, frames_per_scene: int | None = None,
                 version: int = 0, tree: bool = False) -> list[Rollout]:  # fmt: skip
    """G = len(sel) sampled rollouts of ``ps``, with generator noise seed ``noise`` and selection
    seeds ``sel`` -> G ``Rollout`` records with their frames, rewards NaN until scored; ``index``
    is the group's id. ``tree``: at every scene change the G selections branch from one shared
    history, which then continues with branch 0 (``generate``'s ``tree``; ``history_from`` = 0)."""
    group_size = len(sel)
    strategy = LearnedStrategy(policy, embed, seed=sel)
    res = generate(gen, [ps] * group_size, strategy, seed=noise, frames_per_scene=frames_per_scene, ctx=ctx, shared_noise=True, tree=tree)
    transitions = strategy.video_transitions() or [[]] * group_size
    return [
        Rollout(
            prompt_set_id=ps.id, group_id=index, rollout_index=g, policy_version=version, noise_seed=noise,
            selection_seed=sel[g], scene_rewards=np.full(ps.n_scenes, np.nan, np.float32), transitions=transitions[g],
            prompts=list(ps.scenes), frames=res.frames[g].copy(), history_from=0 if tree else -1,  # frames (T, H, W, 3) uint8
        )
        for g in range(group_size)
    ]  # fmt: skip
