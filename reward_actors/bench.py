"""Throughput of the reward actors: scenes scored per second per actor, batched vs one by one.

    python -m reward_actors.bench --scenes 64 --repeats 3 --out results/reward_throughput.json

Each family runs in one Ray actor on loopback (the cache disabled), fed first one call with all
scenes, then one call per scene; medians over repeats; the ratio is measured inside one run.
The scenes are rendered held-out returning scenes, each with the history production gives the
identity reward: the earlier scenes about the subject its prompt names, chosen from the prompts
(``reward_actors.history``), not from the world's ground truth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import numpy as np

from inflvg import cli
from inflvg.config import WorldConfig
from inflvg.validate import positive_int
from inflvg.world.eps import prompt_set_of
from inflvg.world.story import render_story, sample_story

from .cache import ScoreCache
from .config import AlignmentConfig, ArtifactConfig, IdentityConfig
from .group import RewardGroup
from .history import video_scene_batch
from .types import SceneBatch

FAMILIES = {"alignment": AlignmentConfig, "identity": IdentityConfig, "artifacts": ArtifactConfig}


def returning_scenes(n: int, seed: int) -> SceneBatch:
    """n rendered held-out scenes whose subject appeared before (so identity has a history), each
    with the history production uses: chosen from the prompts (``reward_actors.history``)."""
    world = WorldConfig()
    frames, prompts, history = [], [], []
    i = 0
    while len(frames) < n:
        story = sample_story(seed + i, "heldout", world.n_scenes, world.cast_size)
        scenes = video_scene_batch([render_story(story, world).frames], prompt_set_of(story, f"bench-{seed + i}"), world.frames_per_scene)
        histories = scenes.history or [None] * len(scenes)  # video_scene_batch gives every scene an entry
        for f, p, h in zip(scenes.frames, scenes.prompts, histories, strict=True):
            if h is not None and len(frames) < n:
                frames.append(f)
                prompts.append(p)
                history.append(h)
        i += 1
    return SceneBatch(frames, prompts, history)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(family: str, batch: SceneBatch, repeats: int) -> dict:
    group = RewardGroup(family, FAMILIES[family](num_cpus=1), cache=ScoreCache(capacity=0))
    group.score(batch.subset([0]))  # warm-up: first call pays for lazy initialisation
    batched = [timed(lambda: group.score(batch)) for _ in range(repeats)]
    singles = [timed(lambda: [group.score(batch.subset([i])) for i in range(len(batch))]) for _ in range(repeats)]
    n = len(batch)
    out = {"batched_scenes_per_s": n / float(np.median(batched)), "one_by_one_scenes_per_s": n / float(np.median(singles))}
    out["speedup"] = out["batched_scenes_per_s"] / out["one_by_one_scenes_per_s"]
    return out


@dataclass(frozen=True)
class BenchArgs:
    """The reward throughput benchmark's arguments (``python -m reward_actors.bench --help``)."""

    scenes: int = 64
    """Held-out returning scenes scored in each call (rendered, with their prompt-chosen history)."""
    repeats: int = 3
    """Timed repeats of each measurement; the medians are reported."""
    families: Annotated[tuple[str, ...], cli.comma(str, "alignment,identity")] = tuple(FAMILIES)
    """Reward families to measure (comma-separated)."""
    out: str = "results/reward_throughput.json"
    """Where the results go: FILE.json and FILE.md (table) beside it."""

    def __post_init__(self) -> None:
        positive_int(self, "scenes")
        positive_int(self, "repeats")
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            raise ValueError(f"BenchArgs.families must name some of {', '.join(FAMILIES)}, got {','.join(self.families)!r}")


def main(argv: list[str] | None = None) -> dict:
    import ray

    args = cli.parse(BenchArgs, argv, prog="python -m reward_actors.bench", description=__doc__)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    batch = returning_scenes(args.scenes, seed=0)
    report = {fam: measure(fam, batch, args.repeats) for fam in args.families}
    ray.shutdown()
    lines = ["| family | batched scenes/s | one-by-one scenes/s | speedup |", "|---|---|---|---|"]
    lines += [f"| {f} | {r['batched_scenes_per_s']:.1f} | {r['one_by_one_scenes_per_s']:.1f} | {r['speedup']:.2f} |" for f, r in report.items()]
    cli.write_results(args.out, report, "\n".join(lines))
    return report


if __name__ == "__main__":
    main()
