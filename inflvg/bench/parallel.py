"""Run the benchmark's strategies over worker processes, one strategy at a time per worker.

Every strategy's numbers depend only on the prompt sets, the seed and the strategy itself (each
batch keeps its seed), so a strategy measured in a worker gives the same videos as in the parent.
Timings are ratios inside one strategy's run, which shares its core the same way at every length.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ..context import make_strategy
from ..generator.weights import load_generator
from ..world.story import Story
from .run import BenchSetup, Progress, run_quality, run_timing, summarize, with_budget

COST_ORDER = ("full", "learned")  # the slowest first, so the others fill the remaining workers


@dataclass(frozen=True)
class Job:
    weights: str | None
    budget_k: int | None
    seed: int
    stories: list[Story]
    lengths: list[int]
    timing_videos: int
    threads: int
    policy: str | None = None


def make(name: str, job: Job, model):
    if name != "learned":
        return make_strategy(name)
    from ..policy import LearnedStrategy, PromptEmbedder, load_policy

    return LearnedStrategy(load_policy(job.policy), PromptEmbedder(model), greedy=True, record=False)


def run_one(name: str, job: Job) -> tuple[dict[str, np.ndarray], dict]:
    """One strategy's per-video table and summary entry (with timing), in this process."""
    torch.set_num_threads(job.threads)
    model, world, ctx, _ = load_generator(job.weights)
    setup = BenchSetup(model, world, with_budget(ctx, job.budget_k), job.seed)
    strategy = make(name, job, model)
    table = run_quality(setup, strategy, job.stories)
    entry = summarize(table)
    entry["timing"] = run_timing(setup, strategy, job.lengths, job.timing_videos)
    return table, entry


def _worker_init() -> None:
    Progress.inline = False
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """A worker whose benchmark was killed (its parent gone, so it was re-parented) stops too,
    instead of spending the cores on strategies nobody will read."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(1)


def run_all(names: list[str], job: Job, workers: int) -> dict[str, tuple[dict, dict]]:
    """{name: (table, entry)} in the order of ``names``; workers > 1 spreads strategies over processes."""
    if workers <= 1:
        return {name: run_one(name, job) for name in names}
    order = sorted(names, key=lambda n: COST_ORDER.index(n) if n in COST_ORDER else len(COST_ORDER))
    with ProcessPoolExecutor(max_workers=min(workers, len(names)), mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
        futures = {name: pool.submit(run_one, name, job) for name in order}
        return {name: futures[name].result() for name in names}
