"""The one GRPO update, shared by the learner (a DeepSpeed engine) and test-time refinement (a
torch optimizer in the serving replica): per-transition credit from complete groups of rollouts,
then ``epochs`` shuffled passes of minibatch steps on the clipped objective (Shao et al. 2024;
InfLVG, arXiv 2505.17574). Only how a loss becomes a parameter step differs between the two,
and that is the caller's ``step`` function:

    metrics = grpo_update(rollouts, logits, step, UpdateConfig(epochs=2), version=3, device="cpu")

``logits(mb) -> (M, N)`` scores a minibatch's candidates; ``step(loss) -> grad norm`` runs the
backward pass, clips and steps (DeepSpeed's ``engine.backward`` / ``engine.step``, or
``loss.backward``, ``clip_grad_norm_``, ``optimizer.step``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .grpo import SCALES, advantage_stats, credit_transitions, grpo_loss, kl_k3, per_transition_credit, stack_scene_rewards
from .policy import plackett_luce_entropy, plackett_luce_log_prob
from .rollout import Rollout, Transition, TransitionBatch, collate_transitions, group_rollouts
from .validate import at_least, number, one_of

Logits = Callable[[TransitionBatch], torch.Tensor]


@dataclass(frozen=True)
class UpdateConfig:
    """The constants of one GRPO update (the optimiser's own settings stay with the optimiser)."""

    epochs: int = 1
    """Passes over the batch (1 = strictly on-policy: the ratio is 1 at the first step)."""
    minibatch_size: int = 64
    """Transitions per optimizer step."""
    clip_eps: float = 0.2
    """PPO/GRPO ratio clip: the ratio is clipped to [1 - clip_eps, 1 + clip_eps]."""
    kl_beta: float = 0.0
    """Weight of the k3 KL to a reference policy; 0 needs no reference."""
    advantage_scale: str = "group"
    """'group' or 'batch': see ``inflvg.grpo.group_advantages``."""
    seed: int = 0
    """Seeds the minibatch order, with the version: a resumed update repeats it exactly."""

    def __post_init__(self) -> None:
        at_least(self, "epochs", 1)
        at_least(self, "minibatch_size", 1)
        number(self, "clip_eps", 0, strict=True)
        number(self, "kl_beta")
        one_of(self, "advantage_scale", SCALES)
        at_least(self, "seed", 0)


def take(batch: TransitionBatch, idx: torch.Tensor, device: torch.device | str) -> TransitionBatch:
    """Rows ``idx`` of a batch on ``device``, candidate padding trimmed to the longest pool among them."""
    n = max(int(batch.valid[idx].sum(-1).max()), 1)
    return TransitionBatch(
        features=batch.features[idx, :n].to(device), valid=batch.valid[idx, :n].to(device),
        prompt_tokens=batch.prompt_tokens[idx].to(device), prompt_mask=batch.prompt_mask[idx].to(device),
        chosen=batch.chosen[idx].to(device), logp_old=batch.logp_old[idx].to(device),
    )  # fmt: skip


def minibatch_order(n: int, cfg: UpdateConfig, version: int) -> Iterator[torch.Tensor]:
    """Indices of each minibatch, ``epochs`` shuffled passes, seeded by (seed, version)."""
    order = torch.Generator().manual_seed(cfg.seed * 1_000_003 + version)
    for _ in range(cfg.epochs):
        yield from torch.randperm(n, generator=order).split(cfg.minibatch_size)


def scene_reward_stats(groups: list[list[Rollout]]) -> dict[str, float]:
    """Counts over the (prompt set, scene) groups that hold an action (scene 0 usually holds none)."""
    scenes = sorted({t.scene for g in groups for r in g for t in r.transitions})
    rewards, real = stack_scene_rewards(groups)
    rewards, real = rewards[:, :, scenes], real[:, :, scenes]  # (P, G, S_acted)
    _, excluded = per_transition_credit(rewards)
    pairs = real[:, 0, :]  # (P, S_acted): the scene exists in that group's prompt set
    stats = advantage_stats(rewards.transpose(1, 2)[pairs], excluded.transpose(1, 2)[pairs])  # (pairs, G), groups along G
    return {
        "reward_mean": float(rewards[real].nanmean()) if real.any() else float("nan"),
        "zero_variance_fraction": stats["zero_variance_groups"] / max(stats["groups"], 1.0),
        "masked_rewards": stats["masked_rewards"],
    }


def minibatch_loss(logits: Logits, mb: TransitionBatch, advantages: torch.Tensor, cfg: UpdateConfig,
                   reference: Logits | None = None) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """The clipped GRPO loss of one minibatch (advantages (M,)) and its statistics."""
    scores = logits(mb)  # (M, N)
    logp_new = plackett_luce_log_prob(scores, mb.chosen, mb.valid)  # (M,) fp32
    logp_ref = None
    if reference is not None and cfg.kl_beta > 0:
        with torch.no_grad():
            logp_ref = plackett_luce_log_prob(reference(mb), mb.chosen, mb.valid)
    loss, stats = grpo_loss(logp_new, mb.logp_old, advantages, logp_ref=logp_ref, beta=cfg.kl_beta, clip_eps=cfg.clip_eps)
    with torch.no_grad():
        stats["entropy"] = plackett_luce_entropy(scores.detach(), mb.chosen, mb.valid).mean().item()
        stats["kl_old"] = kl_k3(logp_new.detach(), mb.logp_old).mean().item()
    return loss, stats


@dataclass
class Shard:
    """One data-parallel rank's share of a GRPO update: its own used transitions (their features
    never leave the process that made them) and how many every rank holds, so that each rank can
    cut the same global minibatches and take its part of each."""

    transitions: list[Transition]  # M_r used transitions of this rank, in global order
    advantages: torch.Tensor  # (M_r,) float32, from the driver's credit over every rank's rollouts
    counts: tuple[int, ...]  # used transitions on every rank, rank order (sum M: the global batch)
    rank: int = 0  # this rank's position in ``counts``

    def __post_init__(self) -> None:
        if len(self.transitions) != len(self.advantages):
            raise ValueError(f"Shard: {len(self.transitions)} transitions but {len(self.advantages)} advantages")
        if not 0 <= self.rank < len(self.counts) or self.counts[self.rank] != len(self.transitions):
            raise ValueError(f"Shard: rank {self.rank} must index counts {self.counts}, and its entry must equal "
                             f"its {len(self.transitions)} transitions")  # fmt: skip


def credit(rollouts: list[Rollout], cfg: UpdateConfig) -> tuple[list[Transition], torch.Tensor, dict[str, float]]:
    """Per-transition credit over complete groups -> (used transitions, their advantages (M,), metrics).

    A[p, g, s] normalised across the G rollouts of prompt set p at scene s
    (``inflvg.grpo.credit_transitions``). Transitions without signal (masked reward,
    zero-variance group) are dropped. Credit reads only rewards and the transitions' scenes: the
    driver of a hybrid run computes it on rollouts whose features stayed on their ranks."""
    if not rollouts:
        raise ValueError("a GRPO update needs rollouts: at least one complete group")
    groups = group_rollouts(rollouts)
    transitions, advantages, valid = credit_transitions(groups, scale=cfg.advantage_scale)
    used = [t for t, v in zip(transitions, valid.tolist(), strict=True) if v]
    adv = advantages[valid]  # (M,)
    metrics = scene_reward_stats(groups) if transitions else {}
    metrics.update(
        transitions=float(len(used)), transitions_total=float(len(transitions)),
        advantage_mean=float(adv.mean()) if used else 0.0, advantage_std=float(adv.std(unbiased=False)) if used else 0.0,
        optimizer_steps=0.0,
    )  # fmt: skip
    return used, adv, metrics


def grpo_update(rollouts: list[Rollout], logits: Logits, step: Callable[[torch.Tensor], float], cfg: UpdateConfig,
                version: int, device: torch.device | str, reference: Logits | None = None) -> dict[str, float]:  # fmt: skip
    """One GRPO update on complete groups of rollouts -> metrics (``optimizer_steps`` 0: no step):
    ``credit``, then ``shard_update`` as the only rank; with no transition left, no step is taken."""
    used, adv, metrics = credit(rollouts, cfg)
    if not used:
        return metrics
    return metrics | shard_update(Shard(used, adv, (len(used),)), logits, step, cfg, version, device, reference)


def shard_update(shard: Shard, logits: Logits, step: Callable[[torch.Tensor], float], cfg: UpdateConfig, version: int,
                 device: torch.device | str, reference: Logits | None = None,
                 zero_loss: Callable[[], torch.Tensor] | None = None) -> dict[str, float]:  # fmt: skip
    """This rank's part of every minibatch step -> metrics averaged over the steps it took part in.

    The minibatches are those of one process holding all M = sum(counts) transitions (rank r's
    are positions offset_r .. offset_r + M_r - 1 of the global order). Rank r's loss on its m_r of
    a minibatch's m transitions is its mean times m_r * W / m: averaged over the W ranks, as the
    data-parallel all-reduce does, the gradient is that of the mean over all m. A rank with none
    of a minibatch steps on ``zero_loss()`` (0 times the parameters), so every rank takes part in
    every all-reduce. One rank (W = 1) is exactly the single-process update."""
    world, offset = len(shard.counts), sum(shard.counts[: shard.rank])
    sums, taken, steps = defaultdict(float), 0, 0
    for idx in minibatch_order(sum(shard.counts), cfg, version):
        mine = idx[(idx >= offset) & (idx < offset + len(shard.transitions))] - offset
        steps += 1
        if not len(mine):
            if zero_loss is None:
                raise ValueError("shard_update: a rank with no transitions in a minibatch needs zero_loss")
            step(zero_loss())
            continue
        batch = collate_transitions([shard.transitions[i] for i in mine.tolist()])  # one minibatch padded at a time
        loss, stats = minibatch_loss(logits, take(batch, torch.arange(len(mine)), device), shard.advantages[mine].to(device), cfg, reference)
        stats["grad_norm"] = step(loss * (len(mine) * world / len(idx)))
        for key, value in stats.items():
            sums[key] += value
        taken += 1
    return {key: value / max(taken, 1) for key, value in sums.items()} | {"optimizer_steps": float(steps)}
