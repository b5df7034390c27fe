"""The O(N + K) Plackett-Luce log-probability and entropy against the pick-by-pick loop they
replace (kept here as the reference), brute-force enumeration, and fp64 on widely spread logits."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from inflvg.plackett_luce import valid_candidates
from inflvg.policy import gumbel_top_k, plackett_luce_entropy, plackett_luce_log_prob, top_k

INF = float("inf")


def loop_pl(logits, chosen, valid=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The former implementation, one full (B, N) softmax per pick: (log P, chain-rule entropy), (B,)
    each, in fp64 for fp64 logits, else fp32. One change: a pick made when no candidate remains
    adds 0 to the entropy (the loop added log N, the entropy of its all-zero placeholder row)."""
    s = logits if logits.dtype == torch.float64 else logits.float()
    lp = torch.zeros(logits.shape[0], dtype=s.dtype)
    ent = torch.zeros(logits.shape[0], dtype=s.dtype)
    remaining = valid_candidates(logits, valid)
    for i in range(chosen.shape[1]):
        pick = chosen[:, i]
        active = pick >= 0
        safe = pick.clamp_min(0)
        left = remaining.any(-1, keepdim=True)
        rest = torch.where(left, s.masked_fill(~remaining, -INF), torch.zeros_like(s))
        term = rest.gather(1, safe[:, None])[:, 0] - torch.logsumexp(rest, -1)
        term = torch.where(remaining.gather(1, safe[:, None])[:, 0], term, torch.full_like(term, -INF))
        lp = lp + torch.where(active, term, torch.zeros_like(term))
        logp = torch.log_softmax(rest, -1)
        h = -(logp.exp() * logp.masked_fill(~torch.isfinite(logp), 0.0)).sum(-1)
        ent = ent + torch.where(active & left[:, 0], h, torch.zeros_like(h))
        remaining = remaining & ~(F.one_hot(safe, s.shape[1]).bool() & active[:, None])
    return lp, ent


def pool(seed: int, b: int, n: int, k: int, spread: float = 3.0, order: str = "gumbel"):
    """Random logits (B, N), a valid mask (one row with no candidate, one with all), picks
    (B, K) in the given order with -1 past the pool and -1 slots inserted anywhere."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.rand(b, n, generator=g) * 2 - 1) * spread
    valid = torch.rand(b, n, generator=g) < 0.7
    valid[0] = False
    valid[-1] = True
    chosen = top_k(logits, k, valid) if order == "top" else gumbel_top_k(logits, k, g, valid)
    holes = torch.rand(b, k, generator=g) < 0.2  # padding between real picks: kept in order, shifted right
    padded = torch.full_like(chosen, -1)
    for r in range(b):
        row = chosen[r][chosen[r] >= 0].tolist()
        slots = [j for j in range(k) if not holes[r, j]]
        row = row[: len(slots)]
        slots = slots[: len(row)]
        padded[r, slots] = torch.tensor(row, dtype=torch.long)
    return logits, valid, padded


def values_and_grads(fn, logits, chosen, valid, weights):
    x = logits.detach().clone().requires_grad_(True)
    out = fn(x, chosen, valid)
    (grad,) = torch.autograd.grad((out.masked_fill(~torch.isfinite(out), 0.0) * weights).sum(), x)
    return out, grad


def close(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> None:
    assert torch.equal(torch.isinf(a), torch.isinf(b)) and torch.equal(a[torch.isinf(a)], b[torch.isinf(b)])
    fin = torch.isfinite(b)
    torch.testing.assert_close(a[fin].double(), b[fin].double(), rtol=rtol, atol=atol)


@pytest.mark.parametrize(("n", "k", "seed"), [(1, 2, 0), (7, 4, 1), (7, 10, 2), (30, 30, 3), (64, 9, 4)])
def test_values_and_gradients_match_the_loop(n, k, seed):
    logits, valid, chosen = pool(seed, 5, n, k)
    weights = torch.rand(5, generator=torch.Generator().manual_seed(seed)) + 0.5
    for fast, i in ((plackett_luce_log_prob, 0), (plackett_luce_entropy, 1)):
        for dtype, rtol, atol in ((torch.float32, 1e-5, 1e-6), (torch.float64, 1e-5, 1e-8)):
            got, got_grad = values_and_grads(fast, logits.to(dtype), chosen, valid, weights)
            ref, ref_grad = values_and_grads(lambda x, c, v, i=i: loop_pl(x, c, v)[i], logits.to(dtype), chosen, valid, weights)
            assert got.dtype == torch.float32 and torch.isfinite(got_grad).all()
            close(got, ref.float(), rtol, atol)
            close(got_grad, ref_grad, rtol, atol)
    if n > 1 and (chosen[-1] >= 0).any():
        assert plackett_luce_log_prob(logits, chosen, valid)[-1] < 0 < plackett_luce_entropy(logits, chosen, valid)[-1]


def test_invalid_and_repeated_picks_have_probability_zero_with_finite_gradients():
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.0, 3.0]] * 6)
    valid = torch.tensor([[True, True, True, True, False]] * 6)
    chosen = torch.tensor([[2, 0, -1], [2, 2, 0], [4, 0, 1], [-1, 1, 1], [0, -1, 0], [1, -1, 3]])
    got, grad = values_and_grads(plackett_luce_log_prob, logits, chosen, valid, torch.ones(6))
    ref, ref_grad = values_and_grads(lambda x, c, v: loop_pl(x, c, v)[0], logits, chosen, valid, torch.ones(6))
    assert torch.isinf(got[1:5]).all() and torch.isfinite(got[[0, 5]]).all()
    close(got, ref, 1e-5, 1e-6)
    close(grad, ref_grad, 1e-5, 1e-6)
    assert valid_candidates(logits.masked_fill(~valid, -INF), None).equal(valid)  # -inf logits are padding too
    close(plackett_luce_log_prob(logits.masked_fill(~valid, -INF), chosen), got, 0, 0)


def test_empty_pools_no_picks_and_exhausted_rows():
    for logits, chosen in ((torch.zeros(2, 0), torch.full((2, 3), -1)), (torch.randn(2, 4), torch.zeros(2, 0, dtype=torch.long))):
        x = logits.requires_grad_(True)
        for fn in (plackett_luce_log_prob, plackett_luce_entropy):
            out = fn(x, chosen)
            assert out.tolist() == [0.0, 0.0]
            out.sum().backward()  # still part of the graph
    logits, valid = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]), torch.tensor([[False] * 3, [True, False, True]])
    chosen = torch.tensor([[-1, -1, -1, 0], [2, 0, -1, 1]])  # row 0 has no candidate; row 1 picks past its pool
    lp, h = plackett_luce_log_prob(logits, chosen, valid), plackett_luce_entropy(logits, chosen, valid)
    assert lp[0] == float("-inf") and lp[1] == float("-inf") and h[0] == 0.0
    p = torch.tensor([1.0, 3.0]).softmax(0)
    assert h[1].item() == pytest.approx(-(p * p.log()).sum().item(), abs=1e-6)  # the second pick has one candidate left: 0
    fine = plackett_luce_log_prob(logits, chosen[:, :3], valid)
    assert fine[0] == 0.0 and fine[1].item() == pytest.approx(p[1].log().item(), abs=1e-6)


def exact_pl(scores: list[float], picks: tuple) -> float:
    """log of prod_i exp(s_ci) / sum_{j remaining} exp(s_j), in Python floats."""
    remaining, logp = set(range(len(scores))), 0.0
    for c in picks:
        logp += scores[c] - math.log(sum(math.exp(scores[j]) for j in remaining))
        remaining.remove(c)
    return logp


@pytest.mark.parametrize(("n", "k"), [(5, 3), (5, 5), (4, 1)])
def test_enumeration_sums_to_one_and_the_entropy_estimate_is_unbiased(n, k):
    scores = torch.randn(n, generator=torch.Generator().manual_seed(n + k), dtype=torch.float64) * 2
    tuples = list(itertools.permutations(range(n), k))
    chosen = torch.tensor(tuples)
    pad = torch.full((len(tuples), 2), -1)  # empty slots at the front and at the back change nothing
    lp = plackett_luce_log_prob(scores.expand(len(tuples), n), torch.cat([pad[:, :1], chosen, pad], 1))
    assert lp.double().exp().sum().item() == pytest.approx(1.0, abs=1e-6)
    exact = torch.tensor([exact_pl(scores.tolist(), t) for t in tuples], dtype=torch.float64)
    torch.testing.assert_close(lp.double(), exact, rtol=1e-5, atol=1e-6)
    h = plackett_luce_entropy(scores.expand(len(tuples), n), chosen).double()
    p = exact.exp()
    assert (p * h).sum().item() == pytest.approx(-(p * exact).sum().item(), rel=1e-5)  # chain rule: E[sum_i H_i] = H


@pytest.mark.parametrize(("spread", "order"), [(40.0, "top"), (40.0, "gumbel"), (400.0, "top")])
def test_widely_spread_logits_nearly_exhausted_pool_match_fp64(spread, order):
    """Logits over 80 (800) nats, picks until one candidate is left: the last conditionals see
    e^-70 of the first ones' mass, where a running total minus the removed mass is all rounding."""
    n, b = 200, 3
    g = torch.Generator().manual_seed(7)
    logits = (torch.rand(b, n, generator=g, dtype=torch.float64) * 2 - 1) * spread
    valid = torch.ones(b, n, dtype=torch.bool)
    chosen = top_k(logits, n - 1, valid) if order == "top" else gumbel_top_k(logits, n - 1, g, valid)
    weights = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    for fast, i in ((plackett_luce_log_prob, 0), (plackett_luce_entropy, 1)):
        got, got_grad = values_and_grads(fast, logits.float(), chosen, valid, weights)
        ref, ref_grad = values_and_grads(lambda x, c, v, i=i: loop_pl(x, c, v)[i], logits.float().double(), chosen, valid, weights)
        assert torch.isfinite(got).all() and torch.isfinite(got_grad).all()
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got_grad.double(), ref_grad, rtol=1e-5, atol=1e-6)


def test_benchmark_parses_measures_and_reports():
    from inflvg import cli
    from inflvg.bench import plackett_luce as bench

    args = cli.parse(bench.PlackettLuceArgs, ["--n", "3000", "--k", "300", "--loop-k", "8", "--repeats", "2"], prog="bench")
    assert (args.n, args.k, args.loop_k, args.repeats, args.threads) == (3000, 300, 8, 2, 1)
    assert all(cli.field_docs(bench.PlackettLuceArgs).get(f) for f in ("n", "k", "loop_k", "repeats", "threads", "seed", "out"))
    with pytest.raises(ValueError, match="at most n"):
        bench.PlackettLuceArgs(n=10, k=11)
    threads = torch.get_num_threads()
    try:
        cases = [bench.measure(impl, 3000, k, 2, 1, 0) for impl, k in (("linear", 300), ("linear", 8), ("loop", 8))]
    finally:
        torch.set_num_threads(threads)  # measure() sets it for its own (fresh) process
    assert cases[1]["log_prob"] == pytest.approx(cases[2]["log_prob"], rel=1e-5)  # same picks, both implementations
    assert all(len(c["seconds_all"]) == 2 and c["seconds_interval"][0] <= c["seconds"] <= c["seconds_interval"][1] for c in cases)
    table = bench.markdown({"cases": cases, "targets_met": True, "config": {"memory_method": "rss"}})
    assert table.count("\n| ") == 3 and "| loop | 3,000 | 8 |" in table
