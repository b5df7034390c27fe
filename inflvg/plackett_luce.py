"""Plackett-Luce log-probability and chain-rule entropy of an ordered K-selection in O(N + K).

    log P(c_1..c_K | s) = sum_i [ s_{c_i} - log Z_i ],   Z_i = sum_{j in R_i} exp(s_j),
    R_i = valid \\ {c_1..c_{i-1}},

and the remaining mass splits into two sums of positive terms, no subtraction anywhere:

    Z_i = U + sum_{t >= i} exp(s_{c_t}),   U = the mass of the valid candidates never chosen,

so one masked logsumexp over the N candidates and one reverse logcumsumexp over the K picks give
every log Z_i, in log space and fp64: exact to rounding however far the logits spread and however
little mass is left at the end (a running total minus the removed mass would cancel to nothing
once the remaining candidates are e^-37 of the chosen ones, even in fp64). The entropy of pick i,

    H_i = log Z_i - sum_{j in R_i} exp(s_j - log Z_i) s_j,

splits the same way after shifting the scores to t = s - min(s) + 1 >= 1, which makes every term
exp(t) t positive and so a log-space sum too. Memory and time are a few (B, N) and (B, K) arrays,
where the pick-by-pick loop these replace kept K full (B, N) softmaxes for the backward pass.

Conventions: ``chosen`` is (B, K) with -1 for no pick, anywhere in the row; a pick of an invalid
or already-chosen candidate has probability 0 (log P = -inf), found by a scatter of first
occurrences; gradients stay finite (masked terms get zero gradient) even then.
"""

from __future__ import annotations

import torch

_FILL = -1000.0
"""Stands for "no mass" inside the log-space sums: every real term is >= 1 (t >= 1), so a filler,
or the sum of up to e^200 of them, is below any real term by more than fp64's exp underflow
(745 nats) and adds exactly nothing, with zero gradient, where -inf would give NaN gradients."""


def valid_candidates(logits: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """The candidates that can be chosen: (B, N) bool, ``valid`` (if given) and a finite logit."""
    return torch.isfinite(logits) if valid is None else valid.bool() & torch.isfinite(logits)


def _masked_logsumexp(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log sum_{mask} exp(x) along the last dim; _FILL (not -inf) where the mask is empty."""
    return torch.where(mask.any(-1), torch.logsumexp(x.masked_fill(~mask, _FILL), -1), _FILL)


def _suffix_logsumexp(x: torch.Tensor) -> torch.Tensor:
    """out[:, i] = log sum_{t >= i} exp(x[:, t])."""
    return x.flip(-1).logcumsumexp(-1).flip(-1)


def _terms(logits: torch.Tensor, chosen: torch.Tensor, valid: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Per pick, (B, K) fp64: the shifted score of the pick ``t``, log Z_i ``log_z``, the entropy
    ``entropy`` of the conditional (0 where nothing remains), and the masks ``active`` (a real
    pick) and ``allowed`` (among the remaining candidates)."""
    b, n = logits.shape
    k = chosen.shape[1]
    dev = logits.device
    ok = valid_candidates(logits, valid)
    s = logits.detach().double()
    low = torch.where(ok, s, torch.inf).amin(-1, keepdim=True)
    low = torch.where(torch.isfinite(low), low, 0.0)  # rows with no candidate
    t = torch.where(ok, logits.double() - low + 1.0, 1.0)  # >= 1 on the candidates; finite, with zero gradient, elsewhere

    active = chosen >= 0
    pick = torch.where(active, chosen, 0).long()
    steps = torch.arange(k, device=dev).expand(b, k)
    first = torch.full((b, n + 1), k, dtype=torch.long, device=dev)  # column n collects the empty slots
    first.scatter_reduce_(1, torch.where(active, pick, n), steps, "amin")
    allowed = active & ok.gather(1, pick) & (first.gather(1, pick) == steps)
    never = ok & (first[:, :n] == k)  # candidates no pick takes: in every R_i

    t_pick = t.gather(1, pick)
    log_t = t.log()
    log_z = torch.logaddexp(_masked_logsumexp(t, never)[:, None], _suffix_logsumexp(t_pick.masked_fill(~allowed, _FILL)))
    log_a = torch.logaddexp(  # log sum_{R_i} exp(t) t
        _masked_logsumexp(t + log_t, never)[:, None], _suffix_logsumexp((t_pick + log_t.gather(1, pick)).masked_fill(~allowed, _FILL))
    )
    left = never.any(-1, keepdim=True) | (allowed.flip(-1).cumsum(-1).flip(-1) > 0)  # R_i not empty
    entropy = torch.where(left & active, log_z - (log_a - log_z).exp(), 0.0)
    return {"t": t_pick, "log_z": log_z, "entropy": entropy, "active": active, "allowed": allowed}


def _zero(logits: torch.Tensor) -> torch.Tensor:
    """(B,) zeros that are still part of the graph (a sum over no element), for empty pools or picks."""
    return logits.float()[:, :0].sum(-1)


def plackett_luce_log_prob(logits, chosen, valid=None) -> torch.Tensor:
    """Exact log P of the ordered selection, fp32: logits (B, N), chosen (B, K) (-1 = no pick) -> (B,).

    log P = sum_i [ s_{c_i} - logsumexp_{j in R_i} s_j ], R_i the valid candidates not yet chosen.
    A pick of an invalid or already-chosen candidate has probability 0 (log P = -inf)."""
    if logits.shape[1] == 0 or chosen.shape[1] == 0:
        return _zero(logits)
    p = _terms(logits, chosen, valid)
    impossible = torch.where(p["active"], -torch.inf, 0.0).to(p["t"])
    return torch.where(p["allowed"], p["t"] - p["log_z"], impossible).sum(-1).float()


def plackett_luce_entropy(logits, chosen, valid=None) -> torch.Tensor:
    """Unbiased estimate of the entropy of the K-selection, fp32: (B, N), (B, K) -> (B,).

    Chain rule: H(c_1..c_K) = E[ sum_i H(c_i | c_<i) ]; with ``chosen`` sampled from the policy,
    the sum of the exact conditional softmax entropies is an estimate with lower variance than
    -log P. The first term is the exact entropy of the first pick; a pick made when no candidate
    remains adds 0."""
    if logits.shape[1] == 0 or chosen.shape[1] == 0:
        return _zero(logits)
    return _terms(logits, chosen, valid)["entropy"].sum(-1).float()
