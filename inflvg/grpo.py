"""GRPO math as pure torch functions (Shao et al. 2024, DeepSeekMath; as used by InfLVG,
arXiv 2505.17574): group-normalised advantages, the PPO clipped surrogate, the k3 KL estimator.

Every function computes in fp32 whatever the dtype of its inputs. Entries marked invalid (NaN
reward, zero-variance group, padding) carry no gradient and no NaN: they are replaced before
any exp/division, not multiplied by zero afterwards (0 * inf is NaN in a backward pass too).
"""

from __future__ import annotations

import torch

from inflvg.rollout import Rollout, Transition

SCALES = ("group", "batch")


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6, min_std: float = 1e-6, scale: str = "group") -> tuple[torch.Tensor, torch.Tensor]:
    """Group-normalised advantages: rewards (G,) or (P, G), groups along the last axis -> (advantages, excluded).

        scale="group":  A_i = (r_i - mean_g) / (std_g + eps),  std_g the POPULATION std (divide by n, not n - 1),
        scale="batch":  A_i = (r_i - mean_g) / (std_B + eps),  std_B = sqrt(mean of (r - mean_g)^2 over every
                        non-excluded entry of the tensor),

    group statistics over the group's non-NaN rewards only. "group" is GRPO (and InfLVG) as
    published; "batch" keeps groups whose rewards barely differ (an action with no effect on its
    reward) from having their noise blown up to unit-size advantages (Liu et al. 2025, Dr. GRPO,
    drop the per-group std for the same reason). ``excluded`` (same shape, bool) is True
    where an entry carries no learning signal, and its advantage is exactly 0: a NaN (masked)
    reward, or any member of a group whose valid rewards have std < ``min_std`` (all equal, or
    fewer than two valid). Count them with ``advantage_stats``."""
    r = rewards.float()
    masked = torch.isnan(r)
    n = (~masked).sum(-1, keepdim=True).clamp_min(1)
    r0 = torch.where(masked, torch.zeros_like(r), r)
    mean = r0.sum(-1, keepdim=True) / n
    dev = torch.where(masked, torch.zeros_like(r), r0 - mean)
    std = ((dev**2).sum(-1, keepdim=True) / n).sqrt()
    excluded = masked | (std < min_std)
    if scale == "group":
        denom = std
    elif scale == "batch":
        kept = dev[~excluded]
        denom = (kept**2).mean().sqrt() if kept.numel() else torch.ones(())
    else:
        raise ValueError(f"advantage scale must be one of {SCALES}, got {scale!r}")
    advantages = torch.where(excluded, torch.zeros_like(r), dev / (denom + eps))
    return advantages, excluded


def advantage_stats(rewards: torch.Tensor, excluded: torch.Tensor) -> dict[str, float]:
    """Counts for logging; groups along the last axis. A zero-variance group is one whose every
    entry is excluded although not every reward is NaN."""
    masked = torch.isnan(rewards)
    no_signal = excluded.all(-1) & ~masked.all(-1)
    return {
        "groups": float(no_signal.numel()),
        "zero_variance_groups": float(no_signal.sum()),
        "masked_rewards": float(masked.sum()),
        "excluded_fraction": float(excluded.float().mean()),
    }


def per_transition_credit(
    scene_rewards: torch.Tensor, eps: float = 1e-6, min_std: float = 1e-6, scale: str = "group"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-scene credit: scene_rewards (P, G, S) -> (advantages (P, G, S), excluded (P, G, S)).

    The selection at scene s is an action scored by scene s's reward; its advantage is normalised
    within the group (prompt set p, scene s) across the G rollouts:

        A[p, g, s] = (r[p, g, s] - mean_g r[p, :, s]) / (std_g r[p, :, s] + eps)

    (``scale="batch"``: one std over every (p, s) group instead, see ``group_advantages``)."""
    if scene_rewards.dim() != 3:
        raise ValueError(f"scene_rewards must be (P, G, S), got shape {tuple(scene_rewards.shape)}")
    adv, excluded = group_advantages(scene_rewards.transpose(1, 2), eps, min_std, scale)  # (P, S, G)
    return adv.transpose(1, 2), excluded.transpose(1, 2)


def stack_scene_rewards(groups: list[list[Rollout]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Groups (P lists of G rollouts) -> (rewards (P, G, S_max) fp32, real (P, G, S_max) bool).

    The rollouts of one group share a prompt set and so a scene count; groups may differ (a
    prompt file that mixes scene counts). Scenes past a group's count are NaN, which the credit
    treats as masked: no signal, no gradient, and not counted as a masked reward (``real``)."""
    for g in groups:
        if len({len(r.scene_rewards) for r in g}) != 1:
            raise ValueError(f"the rollouts of group {g[0].group_id} differ in scene count; a group is one prompt set")
    s_max = max(len(g[0].scene_rewards) for g in groups)
    rewards = torch.full((len(groups), len(groups[0]), s_max), float("nan"))
    real = torch.zeros(rewards.shape, dtype=torch.bool)
    for p, g in enumerate(groups):
        n = len(g[0].scene_rewards)
        rewards[p, :, :n] = torch.stack([torch.tensor(r.scene_rewards, dtype=torch.float32) for r in g])
        real[p, :, :n] = True
    return rewards, real


def credit_transitions(groups: list[list[Rollout]], eps: float = 1e-6, scale: str = "group") -> tuple[list[Transition], torch.Tensor, torch.Tensor]:
    """Groups of rollouts (P lists of G, e.g. from ``inflvg.rollout.group_rollouts``) -> the M
    transitions of all rollouts, their advantages (M,) from ``per_transition_credit`` and valid (M,)."""
    rewards, _ = stack_scene_rewards(groups)
    adv, excluded = per_transition_credit(rewards, eps, scale=scale)
    transitions, index = [], []
    for p, group in enumerate(groups):
        for g, r in enumerate(group):
            transitions += r.transitions
            index += [(p, g, t.scene) for t in r.transitions]
    if not index:
        return [], torch.zeros(0), torch.zeros(0, dtype=torch.bool)
    p, g, s = torch.tensor(index).unbind(-1)
    return transitions, adv[p, g, s], ~excluded[p, g, s]


def _masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return torch.where(valid, x, torch.zeros_like(x)).sum() / valid.sum().clamp_min(1)


def clipped_objective(logp_new, logp_old, advantages, clip_eps: float = 0.2, valid=None) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO/GRPO clipped surrogate (Schulman et al. 2017): (N,) each -> (loss scalar, stats).

        r = exp(logp_new - logp_old),   loss = -mean_valid min(r A, clip(r, 1 - eps, 1 + eps) A).

    stats: ``clip_fraction``, the share of valid entries where the clipped term is the smaller
    one (their gradient is zero); ``ratio_mean`` over valid entries."""
    valid = torch.ones_like(advantages, dtype=torch.bool) if valid is None else valid.bool()
    delta = torch.where(valid, logp_new.float() - logp_old.float(), torch.zeros_like(advantages, dtype=torch.float32))
    ratio = delta.exp()
    a = torch.where(valid, advantages.float(), torch.zeros_like(ratio))
    unclipped, clipped = ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a
    loss = -_masked_mean(torch.minimum(unclipped, clipped), valid)
    stats = {
        "clip_fraction": float(_masked_mean((clipped < unclipped).float(), valid)),
        "ratio_mean": float(_masked_mean(ratio.detach(), valid)),
    }
    return loss, stats


def kl_k3(logp_new: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(new || ref) from samples of the new policy: (N,), (N,) -> (N,), fp32.

        k3 = exp(ref - new) - (ref - new) - 1   (>= 0, unbiased; Schulman 2020, "Approximating KL")."""
    d = logp_ref.float() - logp_new.float()
    return d.exp() - d - 1


def grpo_loss(
    logp_new, logp_old, advantages, valid=None, logp_ref=None, beta: float = 0.0, clip_eps: float = 0.2
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO loss on M actions: (M,) each -> (loss, stats).

        loss = clipped_objective(logp_new, logp_old, A) + beta * mean_valid k3(logp_new, logp_ref).

    ``beta`` = 0 (the released InfLVG code) needs no reference log-probs."""
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}; use 0 to train without a KL term")
    if beta > 0 and logp_ref is None:
        raise ValueError("grpo_loss: beta > 0 needs logp_ref, the reference policy's log-probs of the same actions")
    valid = torch.ones_like(advantages, dtype=torch.bool) if valid is None else valid.bool()
    loss, stats = clipped_objective(logp_new, logp_old, advantages, clip_eps, valid)
    stats["policy_loss"] = loss.item()
    if logp_ref is not None:
        zero = torch.zeros_like(advantages, dtype=torch.float32)
        kl = _masked_mean(kl_k3(torch.where(valid, logp_new.float(), zero), torch.where(valid, logp_ref.float(), zero)), valid)
        stats["kl"] = kl.item()
        loss = loss + beta * kl
    stats["loss"] = loss.item()
    return loss, stats
