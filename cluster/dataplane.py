"""Bytes one training step moves between processes, by category, and the peak each process holds:
the data plane of ``cluster/train.py``'s ``train_step`` as built, from the real record classes.

    python -m cluster.dataplane --generator wan-1.3b --prompt-sets 16 --group-size 10 --out results/dataplane.json

What crosses which boundary today (``train_step``):

- requests: the driver sends each rollout replica its chunk of prompt sets;
- rollouts_to_driver: each replica returns its ``Rollout`` records, frames and transitions included,
  and the driver ``ray.get``s them all;
- frames_to_rewards: for every reward family the driver sends every scene's frames with its subject's
  earlier frames as history (``scoring.scene_batch``), one ``SceneBatch`` subset per replica;
- scores_to_driver: one ``ScoreResult`` per family back;
- rollouts_to_learner: the driver passes the whole scored rollouts to ``learner.update``, which Ray
  serializes again;
- weights_to_driver, weights_to_workers: ``learner.weights()`` comes back to the driver, which
  ``ray.put``s it once; every rollout replica fetches that object.

Sizes are serialized sizes as Ray stores objects (``dataplane_model.wire_bytes``: pickle protocol 5,
numpy buffers out of band). ``measure_step_bytes`` serializes a real step's objects (numpy buffers are
not copied, so it costs only the framing); the model builds the same objects at a generator's shapes
(``dataplane_model``) and counts them without allocating. Score-cache hits (a repeated scene) are not
subtracted: they do not occur with fresh noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Annotated, Any, Literal

import numpy as np

from inflvg import cli
from inflvg.policy import PolicyConfig, SelectionPolicy
from inflvg.prompts import PromptSet
from inflvg.protocol import BACKENDS
from inflvg.rollout import Rollout
from inflvg.validate import positive_int
from inflvg.video import short_side_shape
from reward_actors.history import frames_read
from reward_actors.types import ScoreResult

from .config import PRESETS
from .dataplane_model import collated_bytes, model_rollouts, modelled_bytes, spec_generator, wire_bytes
from .hybrid import light
from .scoring import scene_batch

Size = Callable[[object], int]
Families = dict[str, Any]  # reward family -> its config (``RewardConfig.alignment`` ...): what it reads, its replicas
CATEGORIES = ("requests", "rollouts_to_driver", "frames_to_rewards", "scores_to_driver", "rollouts_to_learner",
              "weights_to_driver", "weights_to_workers", "advantages_to_ranks", "gradients_allreduce")  # fmt: skip


def chunks(n: int, replicas: int) -> list[tuple[int, int]]:
    """How ``RolloutGroup`` cuts a request of n prompt sets over its replicas."""
    from rollout_workers.group import _chunks

    return _chunks(n, replicas)


def _by_set(rollouts: list[Rollout]) -> dict[int, list[Rollout]]:
    out: dict[int, list[Rollout]] = {}
    for r in rollouts:
        out.setdefault(r.group_id, []).append(r)
    return out


def scene_batch_bytes(rollouts: list[Rollout], prompt_sets: dict[str, PromptSet], size: Size, family: str, cfg: Any) -> int:
    """Bytes of the scene batch ``family`` receives: the frames of every scene and of its history that the
    family reads (``frames_read``), built by ``scoring.scene_batch`` one rollout at a time (its history
    is a copy: at scale, all at once is GBs)."""
    return sum(size(frames_read(family, cfg, scene_batch([r], prompt_sets, rollouts))) for r in rollouts)


def family_batches(rollouts: list[Rollout], prompt_sets: dict[str, PromptSet], families: Families, size: Size) -> dict[str, int]:
    return {fam: scene_batch_bytes(rollouts, prompt_sets, size, fam, cfg) for fam, cfg in families.items()}


def advantage_bytes(rollouts: list[Rollout], bounds: list[tuple[int, int]]) -> int:
    """What a hybrid driver sends the ranks after credit: each rank's (group, rollout, scene) keys, advantages
    and the counts (``HybridGroup.update``), counted for every transition (dropped ones are not sent: an upper bound)."""
    out = 0
    for a, b in bounds:
        keys = [(r.group_id, r.rollout_index, t.scene) for r in rollouts if a <= r.group_id < b for t in r.transitions]
        out += wire_bytes((keys, [0.5] * len(keys), tuple(range(len(bounds)))))
    return out


def step_bytes(rollouts: list[Rollout], prompt_sets: list[PromptSet], weights: dict, families: Families, rollout_replicas: int,
               size: Size = wire_bytes, topology: str = "separate", optimizer_steps: int = 0) -> dict[str, int]:  # fmt: skip
    """Bytes per category of one step whose scored rollouts are ``rollouts``; ``size`` serializes
    (``wire_bytes``, a real step) or models (``modelled_bytes``, records of zero-stride views).

    'separate': the rollouts go to the driver and again to the learner, the weights come back.
    'hybrid': the ranks return ``light`` rollouts (no features), get keys and advantages, and
    all-reduce the gradient of each of ``optimizer_steps`` steps (a ring: 2 (W - 1) gradients in all)."""
    sets = {ps.id: ps for ps in prompt_sets}
    groups = _by_set(rollouts)
    bounds = chunks(len(groups), rollout_replicas)
    order = sorted(groups)
    hybrid = topology == "hybrid"
    as_sent = light if hybrid else (lambda r: r)
    returned = [[replace(as_sent(r), scores={}) for g in order[a:b] for r in groups[g]] for a, b in bounds]  # as the workers return them
    n_scenes = sum(len(r.prompts) for r in rollouts)
    result = ScoreResult(np.zeros(n_scenes), np.ones(n_scenes, bool), [None] * n_scenes, "model", "0" * 16)
    weight_bytes = wire_bytes((1, weights))
    out = {
        "requests": sum(wire_bytes(prompt_sets[a:b]) for a, b in bounds),
        "rollouts_to_driver": sum(size(chunk) for chunk in returned),
        "frames_to_rewards": sum(family_batches(rollouts, sets, families, size).values()),
        "scores_to_driver": len(families) * wire_bytes(result),
        "rollouts_to_learner": 0 if hybrid else size(rollouts),
        "weights_to_driver": 0 if hybrid else weight_bytes,
        "weights_to_workers": 0 if hybrid else rollout_replicas * wire_bytes(weights),
        "advantages_to_ranks": advantage_bytes(rollouts, bounds) if hybrid else 0,
        "gradients_allreduce": 2 * (len(bounds) - 1) * sum(v.nbytes for v in weights.values()) * optimizer_steps if hybrid else 0,
    }
    out["step"] = sum(out[c] for c in CATEGORIES)
    return out


def measure_step_bytes(rollouts: list[Rollout], prompt_sets: list[PromptSet], weights: dict, families: Families,
                       rollout_replicas: int, topology: str = "separate", optimizer_steps: int = 0) -> dict[str, float]:  # fmt: skip
    """The driver's hook: serialized bytes of a real step by category -> {'bytes_<category>': ..., 'bytes_step': ...}
    for ``Tracker.log_step``. Call it in ``train_step`` after scoring (``rollouts`` scored, ``weights`` the
    state_dict just pushed, or the learner's weights for a hybrid step, which pushes none)."""
    sizes = step_bytes(rollouts, prompt_sets, weights, families, rollout_replicas, topology=topology, optimizer_steps=optimizer_steps)
    return {f"bytes_{k}": float(v) for k, v in sizes.items()}


def largest_minibatch(rollouts: list[Rollout], m: int) -> int:
    """Bytes of the padded ``TransitionBatch`` of the ``m`` largest transitions of ``rollouts``: the most
    one minibatch step collates (``inflvg.update.shard_update`` pads one minibatch at a time)."""
    transitions = sorted((t for r in rollouts for t in r.transitions), key=lambda t: -t.features.shape[0])[:m]
    return collated_bytes([replace(rollouts[0], transitions=transitions)]) if transitions else 0


def peak_bytes(rollouts: list[Rollout], prompt_sets: list[PromptSet], families: Families, rollout_replicas: int,
               size: Size = modelled_bytes, topology: str = "separate", minibatch_size: int = 64) -> dict[str, int]:  # fmt: skip
    """Step data each process holds at its peak (host memory and its node's object store):

    - rollout_worker: its chunk's records and their serialized copy in the object store as it returns
      them ('hybrid': the light copy), and a hybrid rank's share of one padded minibatch when it learns;
    - driver: all rollouts as returned (``ray.get`` maps the numpy buffers of the object store) and then
      either the largest family's scene batch (families are scored one after the other) or the
      serialized learner argument ('separate');
    - reward_actor: the largest chunk of one family's scene batch (over that family's replicas);
    - learner ('separate'): the rollouts it is passed and one padded minibatch."""
    sets = {ps.id: ps for ps in prompt_sets}
    groups = _by_set(rollouts)
    order = sorted(groups)
    mine = [[r for g in order[a:b] for r in groups[g]] for a, b in chunks(len(groups), rollout_replicas)]
    batches = family_batches(rollouts, sets, families, size)
    scoring = max(batches.values(), default=0)
    actor = max((-(-batches[f] // cfg.replicas) for f, cfg in families.items()), default=0)
    if topology == "hybrid":
        share = -(-minibatch_size // len(mine))
        rank = max(size(c) + size([light(r) for r in c]) + largest_minibatch(c, share) for c in mine)
        return {"rollout_worker": rank, "driver": size([light(r) for r in rollouts]) + scoring, "reward_actor": actor}
    held = size(rollouts)
    return {
        "rollout_worker": max(2 * size(c) for c in mine),
        "driver": held + max(scoring, held),
        "reward_actor": actor,
        "learner": held + largest_minibatch(rollouts, minibatch_size),
    }


def alternatives(build: Callable[[str, tuple[int, int]], dict[str, int]], built: str, full: tuple[int, int],
                 sent: tuple[int, int]) -> dict[str, dict[str, int]]:  # fmt: skip
    """Bytes per step of the other designs, by category: the other learner placement, and both with frames
    at the generator's full size (``build(topology, frame shape)`` models one)."""
    other = "separate" if built == "hybrid" else "hybrid"
    designs = {other: (other, sent)} | ({f"{built}_full_frames": (built, full), f"{other}_full_frames": (other, full)} if full != sent else {})
    return {name: build(topology, shape) for name, (topology, shape) in designs.items()}


@dataclass(frozen=True)
class DataplaneArgs:
    """The data-plane model's arguments (``python -m cluster.dataplane --help``)."""

    generator: Annotated[str, cli.choice(BACKENDS)] = "wan-1.3b"
    """The generator by name: frame shape, scene length, widths, prompt length and K are its."""
    prompt_sets: int = 16
    """P: prompt sets per step."""
    group_size: int = 10
    """G: rollouts per prompt set."""
    pools: Annotated[tuple[int, ...], cli.comma(int, "70000,145000,220000")] = (70_000, 145_000, 220_000)
    """Candidates in the pool at each scene change, one transition each (scenes = transitions + 1). InfLVG: 70k/145k/220k."""
    budget_k: int | None = None
    """K, tokens chosen per transition; None: the generator's (wan-1.3b: 9,360, InfLVG's)."""
    frames_per_scene: int | None = None
    """Frames per scene sent to the rewards; None: the generator's scene length (wan-1.3b: 3 frames of 480 x 832)."""
    preset: Annotated[str, cli.choice(PRESETS)] = "gpu"
    """The training preset (cluster/config.py) whose reward families, replicas, cast size and policy are used."""
    rollout_replicas: int | None = None
    """Rollout replicas (the ranks, when hybrid); None: the preset's."""
    topology: Literal["hybrid", "separate"] = "hybrid"
    """Where the learner runs (``ServiceConfig.topology``): 'hybrid' (every rollout replica a learner rank) or
    'separate' (one learner actor); the other is reported under ``alternatives``."""
    frames_short_side: int | None = 224
    """Frames leave the rollout workers with this shorter side (``RolloutConfig.frames_short_side``); None: the generator's size."""
    out: str = "results/dataplane.json"
    """Where the results go: FILE.json and FILE.md (the table) beside it."""

    def __post_init__(self) -> None:
        for name in ("prompt_sets", "group_size"):
            positive_int(self, name)
        for name in ("budget_k", "frames_per_scene", "rollout_replicas"):
            if getattr(self, name) is not None:
                positive_int(self, name)
        if not self.pools or min(self.pools) < 1:
            raise ValueError(f"DataplaneArgs.pools must name at least one pool size >= 1, got {self.pools}")


def model_step(args: DataplaneArgs) -> dict:
    """The data plane of one step at ``args``' shapes -> bytes per step, by category, and peaks per process."""
    from .config import preset
    from .sampler import PromptSampler

    cfg = preset(args.preset)
    gen = spec_generator(args.generator)
    spec = gen.spec
    k = args.budget_k or spec.context.budget_k
    fps = args.frames_per_scene or spec.frames_per_scene
    replicas = args.rollout_replicas or cfg.rollout.replicas
    families = {fam: getattr(cfg.rewards, fam) for fam, w in cfg.rewards.weights if w > 0}
    prompt_sets = PromptSampler(cfg.seed, len(args.pools) + 1, cfg.cast_size).next(args.prompt_sets)
    weights = SelectionPolicy(PolicyConfig(**{**asdict(cfg.learner.policy), "d_feature": spec.d_feature, "d_prompt": spec.d_prompt})).state_dict()
    full, sent = spec.frame_shape, short_side_shape(*spec.frame_shape, args.frames_short_side)
    transitions = args.prompt_sets * args.group_size * len(args.pools)
    steps = cfg.learner.epochs * -(-transitions // cfg.learner.minibatch_size)  # every transition used: an upper bound

    def records(shape: tuple[int, int]) -> list[Rollout]:
        return model_rollouts(gen, prompt_sets, args.group_size, args.pools, k, fps, list(families), frame_shape=shape)

    def build(topology: str, shape: tuple[int, int]) -> dict[str, int]:
        return step_bytes(records(shape), prompt_sets, weights, families, replicas, modelled_bytes, topology, steps)

    rollouts = records(sent)
    built = build(args.topology, sent)
    peaks = peak_bytes(rollouts, prompt_sets, families, replicas, topology=args.topology, minibatch_size=cfg.learner.minibatch_size)
    first = rollouts[0]
    return {
        "bytes_per_step": built["step"],
        "peak_bytes_per_worker": max(peaks.values()),
        "peak_process": max(peaks, key=lambda p: peaks[p]),
        "bytes_by_category": {c: built[c] for c in CATEGORIES},
        "peak_bytes_by_process": peaks,
        "alternatives": alternatives(build, args.topology, full, sent),
        "shapes": {
            "rollouts": len(rollouts), "scenes": len(first.prompts), "frames": list(first.frames.shape) if first.frames is not None else None,
            "generator_frame": list(full), "transitions": [{"scene": t.scene, "features": list(t.features.shape), "features_dtype":
            str(t.features.dtype), "prompt_tokens": list(t.prompt_tokens.shape), "chosen": list(t.chosen.shape)} for t in first.transitions],
            "rollout_bytes": modelled_bytes(first), "weights_bytes": wire_bytes(weights), "optimizer_steps": steps,
            "rollout_replicas": replicas, "reward_families": {f: c.replicas for f, c in families.items()},
        },
        "config": asdict(args),
    }  # fmt: skip


def _gb(n: float) -> str:
    return f"{n / 1e9:,.3f}"


def markdown(r: dict) -> str:
    rows = ["| category | GB per step |", "|---|---|"]
    rows += [f"| {c} | {_gb(v)} |" for c, v in r["bytes_by_category"].items()]
    rows += [f"| **total (as built)** | **{_gb(r['bytes_per_step'])}** |", "", "| process | peak GB |", "|---|---|"]
    rows += [f"| {p} | {_gb(v)} |" for p, v in r["peak_bytes_by_process"].items()]
    rows += ["", "| design | GB per step |", "|---|---|", f"| as built ({r['config']['topology']}) | {_gb(r['bytes_per_step'])} |"]
    rows += [f"| {name} | {_gb(v['step'])} |" for name, v in r["alternatives"].items()]
    s, c = r["shapes"], r["config"]
    feats = ", ".join(f"{t['features']} {t['features_dtype']}" for t in s["transitions"])
    rows += ["", (f"{c['generator']}: {c['prompt_sets']} prompt sets x {c['group_size']} rollouts, {s['scenes']} scenes, frames {s['frames']} "
             f"uint8, features per transition {feats}; one rollout {_gb(s['rollout_bytes'])} GB; {s['rollout_replicas']} rollout "
             f"replicas; reward families {s['reward_families']}.")]  # fmt: skip
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> dict:
    prog = "python -m cluster.dataplane"
    args = cli.parse(DataplaneArgs, argv, prog=prog, description=__doc__)
    with cli.usage_errors(prog, ValueError):
        result = model_step(args)
    cli.write_results(args.out, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
