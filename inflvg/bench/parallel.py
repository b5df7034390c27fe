"""Run the benchmark's tasks over worker processes: each strategy's quality phase at each quality
length and its timing phase are separate tasks, handed out costliest first so the workers finish
close together.

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
from dataclasses import dataclass, replace

import torch
from tqdm import tqdm

from ..config import GeneratorConfig
from ..context import make_strategy
from ..prompts import PromptSet
from ..protocol import load_backend
from ..world.story import Story
from .run import BenchSetup, Progress, run_quality, run_timing, summarize, summarize_length, with_budget

FULL_HISTORY_UP_TO = 8
"""Full history's quality is measured up to this multiple of the horizon: its cost per frame grows
with the history (a 4x video costs it about 10x window's), so it is left out at 9x and beyond."""


def left_out(name: str, length: int) -> bool:
    return name == "full" and length > FULL_HISTORY_UP_TO


@dataclass(frozen=True)
class Job:
    generator: str
    weights: str | None
    budget_k: int | None
    seed: int
    quality: dict[int, tuple[list[PromptSet], list[Story | None]]]
    """Quality length (multiple of the horizon) -> its prompt sets and each one's StoryWorld ground truth (None: free text)."""
    lengths: list[int]  # the timing phase's
    scenes_per_horizon: int
    timing_videos: int
    threads: int
    policy: str | None = None
    rope_scaling: str | None = None  # FLEX on ('flex') or off ('none'); None: the weights' own


def with_rope_scaling(gen, scaling: str) -> None:
    """FLEX on ('flex') or off ('none'), the ablation: the StoryWorld model's temporal RoPE scaling,
    set in place (it is read at every block, so nothing else changes)."""
    model = getattr(gen, "model", None)
    cfg = getattr(model, "cfg", None)
    if not isinstance(cfg, GeneratorConfig):
        raise ValueError(f"--rope-scaling applies to the storyworld backend (its GeneratorConfig.rope_scaling), not {gen.spec.backend}")
    model.cfg = replace(cfg, rope_scaling=scaling)  # pyright: ignore[reportOptionalMemberAccess]


def make(name: str, job: Job, gen):
    if name != "learned":
        return make_strategy(name)
    from ..policy import LearnedStrategy, PromptEmbedder, load_policy

    if job.policy is None:
        raise ValueError("the learned strategy needs a policy checkpoint (Job.policy)")
    return LearnedStrategy(load_policy(job.policy, gen.device), PromptEmbedder(gen), greedy=True, record=False)


def run_task(phase: str, name: str, length: int, job: Job):
    """One strategy's per-video and per-scene quality tables at one ``length`` (``phase="quality"``)
    or its timing entry (``length`` unused), in this process."""
    torch.set_num_threads(job.threads)
    gen = load_backend(job.generator, job.weights)
    if job.rope_scaling is not None:
        with_rope_scaling(gen, job.rope_scaling)
    setup = BenchSetup(gen, with_budget(gen.spec.context, job.budget_k), job.seed)
    strategy = make(name, job, gen)
    if phase == "quality":
        return run_quality(setup, strategy, *job.quality[length])
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


def _cost(task: tuple[str, str, int], job: Job) -> float:
    """Rough frames to make: full history's cost per frame grows with the length, learned's selection costs about one more."""
    phase, name, length = task
    if phase == "quality":
        frames, longest = sum(ps.n_scenes for ps in job.quality[length][0]), length
    else:
        frames, longest = 2 * job.timing_videos * job.scenes_per_horizon * max(job.lengths), max(job.lengths)
    return frames * (longest if name == "full" else 2 if name == "learned" else 1)


def run_all(names: list[str], job: Job, workers: int) -> dict[str, tuple[dict[int, dict], dict]]:
    """{name: ({length: per-video table}, entry)} in the order of ``names``; workers > 1 spreads the
    tasks over processes. The entry's top-level metrics are those of the shortest quality length,
    ``by_length`` has every length the strategy is measured at (``left_out``)."""
    lengths = sorted(job.quality)
    tasks = [("quality", name, L) for name in names for L in lengths if not left_out(name, L)] + [("timing", name, 0) for name in names]
    if workers <= 1:
        done = {task: run_task(*task, job) for task in tasks}
    else:
        tasks.sort(key=lambda task: -_cost(task, job))
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
            futures = {task: pool.submit(run_task, *task, job) for task in tasks}
            for _ in tqdm(as_completed(futures.values()), total=len(futures), desc=f"strategy tasks on {workers} workers", unit="task"):
                pass
            done = {task: future.result() for task, future in futures.items()}
    out = {}
    for name in names:
        measured = {L: done["quality", name, L] for L in lengths if ("quality", name, L) in done}
        top = measured[min(measured)]
        entry = summarize(top[0]) | {"timing": done["timing", name, 0], "by_length": {str(L): summarize_length(*m) for L, m in measured.items()}}
        out[name] = ({L: m[0] for L, m in measured.items()}, entry)
    return out
