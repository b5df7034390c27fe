"""Run the benchmark's tasks over worker processes: each strategy's quality phase and its timing
phase are separate tasks, handed out longest first so the workers finish close together.

Every strategy's numbers depend only on the prompt sets, the seed and the strategy itself (each
batch keeps its seed), so a strategy measured in a worker gives the same videos as in the parent.
Timings are ratios against 1x frames made alongside (``run_timing``), so a busy neighbour
worker slows both sides of a ratio alike.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import torch
from tqdm import tqdm

from ..context import make_strategy
from ..prompts import PromptSet
from ..protocol import load_backend
from ..world.story import Story
from .run import BenchSetup, Progress, run_quality, run_timing, summarize, with_budget

# the slowest tasks first, so the others fill the remaining workers (full history's timing alone
# takes longer than most strategies' quality and timing together)
COST_ORDER = (("timing", "full"), ("quality", "full"), ("quality", "learned"), ("timing", "learned"))


@dataclass(frozen=True)
class Job:
    generator: str
    weights: str | None
    budget_k: int | None
    seed: int
    prompt_sets: list[PromptSet]
    truths: list[Story | None]  # each prompt set's StoryWorld ground truth, None for free text
    lengths: list[int]
    timing_videos: int
    threads: int
    policy: str | None = None


def make(name: str, job: Job, gen):
    if name != "learned":
        return make_strategy(name)
    from ..policy import LearnedStrategy, PromptEmbedder, load_policy

    if job.policy is None:
        raise ValueError("the learned strategy needs a policy checkpoint (Job.policy)")
    return LearnedStrategy(load_policy(job.policy, gen.device), PromptEmbedder(gen), greedy=True, record=False)


def run_task(phase: str, name: str, job: Job):
    """One strategy's per-video quality table (``phase="quality"``) or its timing entry, in this process."""
    torch.set_num_threads(job.threads)
    gen = load_backend(job.generator, job.weights)
    setup = BenchSetup(gen, with_budget(gen.spec.context, job.budget_k), job.seed)
    strategy = make(name, job, gen)
    if phase == "quality":
        return run_quality(setup, strategy, job.prompt_sets, job.truths)
    return run_timing(setup, strategy, job.lengths, job.timing_videos)


def _worker_init() -> None:
    Progress.enabled = False
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """A worker whose benchmark was killed (its parent gone, so it was re-parented) stops too,
    instead of spending the cores on strategies nobody will read."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(1)


def run_all(names: list[str], job: Job, workers: int) -> dict[str, tuple[dict, dict]]:
    """{name: (table, entry)} in the order of ``names``; workers > 1 spreads the tasks over processes."""
    tasks = [(phase, name) for name in names for phase in ("quality", "timing")]
    if workers <= 1:
        done = {task: run_task(*task, job) for task in tasks}
    else:
        tasks.sort(key=lambda task: COST_ORDER.index(task) if task in COST_ORDER else len(COST_ORDER) + (task[0] == "timing"))
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
            futures = {task: pool.submit(run_task, *task, job) for task in tasks}
            for _ in tqdm(as_completed(futures.values()), total=len(futures), desc=f"strategy tasks on {workers} workers", unit="task"):
                pass
            done = {task: future.result() for task, future in futures.items()}
    return {name: (done["quality", name], summarize(done["quality", name]) | {"timing": done["timing", name]}) for name in names}
