"""Cost of the Plackett-Luce log-probability and its backward pass at the learner's real sizes.

    python -m inflvg.bench.plackett_luce --out results/plackett_luce.json

One row (B = 1), N candidates, K picks drawn by Gumbel-top-K, every candidate valid; one torch
thread by default. Per case: ``seconds`` is the median over ``--repeats`` of log-prob + backward
(``plackett_luce_log_prob(logits, chosen).sum().backward()``), ``seconds_interval`` the [min, max]
of those repeats, which holds the median with probability 1 - 2^(1 - repeats) (98.4% for 7; no
distribution assumed). ``peak_additional_bytes``: peak resident memory (``getrusage`` maxrss)
after the repeats minus the resident memory (``/proc/self/statm``) just before them, each case in
a fresh process (torch's CPU allocator keeps no statistics, and tracemalloc does not see it);
``peak_is_upper_bound`` when the repeats never passed the process's earlier peak (its imports).

Cases: the O(N + K) implementation at K and at ``--loop-k``, and the pick-by-pick loop it
replaced (one full (B, N) softmax per pick, all kept for the backward pass) at ``--loop-k`` only:
measured, not extrapolated, since at K = 9,360 it holds about 10 GB of autograd graph.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import cli
from ..plackett_luce import plackett_luce_log_prob, valid_candidates
from ..policy import gumbel_top_k
from ..validate import positive_int

TARGET_SECONDS, TARGET_BYTES = 0.5, 0.5e9


def loop_log_prob(logits: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """The former implementation, for this comparison only (tests/test_plackett_luce.py keeps the
    reference with the entropy): one masked (B, N) logsumexp per pick, O(N K) time and graph."""
    s = logits.float()
    total = torch.zeros(logits.shape[0], dtype=torch.float32)
    remaining = valid_candidates(logits, None)
    for i in range(chosen.shape[1]):
        pick = chosen[:, i]
        active, safe = pick >= 0, pick.clamp_min(0)
        left = remaining.any(-1, keepdim=True)
        rest = torch.where(left, s.masked_fill(~remaining, float("-inf")), torch.zeros_like(s))
        term = rest.gather(1, safe[:, None])[:, 0] - torch.logsumexp(rest, -1)
        term = torch.where(remaining.gather(1, safe[:, None])[:, 0], term, torch.full_like(term, float("-inf")))
        total = total + torch.where(active, term, torch.zeros_like(term))
        remaining = remaining & ~(F.one_hot(safe, s.shape[1]).bool() & active[:, None])
    return total


IMPLEMENTATIONS = {"linear": plackett_luce_log_prob, "loop": loop_log_prob}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(impl: str, n: int, k: int, repeats: int, threads: int, seed: int) -> dict:
    """One case, meant to run in a fresh process (see the module docstring)."""
    torch.set_num_threads(threads)
    fn = IMPLEMENTATIONS[impl]
    g = torch.Generator().manual_seed(seed)
    small = torch.randn(1, 100, generator=g, requires_grad=True)  # a warm-up that loads every code path
    fn(small, gumbel_top_k(small.detach(), 10, g)).sum().backward()
    logits = torch.randn(1, n, generator=g).requires_grad_(True)
    chosen = gumbel_top_k(logits.detach(), k, g)
    before, peak_before = _rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    seconds, logp = [], float("nan")
    for _ in range(repeats):
        logits.grad = None
        start = time.perf_counter()
        out = fn(logits, chosen)
        out.sum().backward()
        seconds.append(time.perf_counter() - start)
        logp = float(out.detach()[0])
        del out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())
    return {"implementation": impl, "n": n, "k": k, "seconds": statistics.median(seconds), "seconds_interval": [min(seconds), max(seconds)],
            "seconds_all": seconds, "peak_additional_bytes": max(peak - before, 0),
            "peak_is_upper_bound": peak == peak_before, "log_prob": logp}  # fmt: skip


def markdown(result: dict) -> str:
    rows = ["| implementation | N | K | seconds (median) | [min, max] | peak additional MB |", "|---|---|---|---|---|---|"]
    for c in result["cases"]:
        lo, hi = c["seconds_interval"]
        mb = c["peak_additional_bytes"] / 1e6
        rows.append(f"| {c['implementation']} | {c['n']:,} | {c['k']:,} | {c['seconds']:.4f} | [{lo:.4f}, {hi:.4f}] | {mb:.1f} |")
    main = result["cases"][0]
    verdict = "met" if result["targets_met"] else "NOT met"
    return ("\n".join(rows) + f"\n\nTargets at K = {main['k']:,} (<= {TARGET_SECONDS} s, <= {TARGET_BYTES / 1e9} GB): {verdict}. "
            f"Memory: {result['config']['memory_method']}.\n")  # fmt: skip


@dataclass(frozen=True)
class PlackettLuceArgs:
    """The Plackett-Luce benchmark's arguments (``python -m inflvg.bench.plackett_luce --help``)."""

    n: int = 220_000
    """Candidates in the pool."""
    k: int = 9_360
    """Picks of the O(N + K) implementation's main case."""
    loop_k: int = 64
    """Picks of the comparison cases, where the former loop is timed too."""
    repeats: int = 7
    """Timed calls per case."""
    threads: int = 1
    """torch threads."""
    seed: int = 0
    """Seed of the logits and the picks."""
    out: str = "results/plackett_luce.json"
    """Where the results go: FILE.json and FILE.md (table) beside it."""

    def __post_init__(self) -> None:
        for name in ("n", "k", "loop_k", "repeats", "threads"):
            positive_int(self, name)
        if max(self.k, self.loop_k) > self.n:
            raise ValueError(f"PlackettLuceArgs: k ({self.k}) and loop_k ({self.loop_k}) must be at most n ({self.n})")


def main(argv: list[str] | None = None) -> dict:
    args = cli.parse(PlackettLuceArgs, argv, prog="python -m inflvg.bench.plackett_luce", description=__doc__)
    cases = [("linear", args.k), ("linear", args.loop_k), ("loop", args.loop_k)]
    ctx = mp.get_context("spawn")
    results = []
    for impl, k in cases:
        with ctx.Pool(1) as pool:  # a fresh process per case: its peak memory is its own
            results.append(pool.apply(measure, (impl, args.n, k, args.repeats, args.threads, args.seed)))
    main_case = results[0]
    result = {
        "config": {"n": args.n, "k": args.k, "loop_k": args.loop_k, "repeats": args.repeats, "threads": args.threads, "seed": args.seed,
                   "batch": 1, "torch": torch.__version__,
                   "memory_method": "getrusage maxrss after the repeats minus /proc/self/statm RSS before them, one fresh process per case"},
        "cases": results,
        "targets": {"seconds": TARGET_SECONDS, "bytes": TARGET_BYTES},
        "targets_met": main_case["seconds"] <= TARGET_SECONDS and main_case["peak_additional_bytes"] <= TARGET_BYTES,
    }  # fmt: skip
    cli.write_results(args.out, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
