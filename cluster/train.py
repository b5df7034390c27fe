"""The training driver: the entrypoint that `ray job submit` runs.

    python -m cluster.train --preset debug|storyworld|gpu [--generator NAME] [--prompts FILE.jsonl] [--steps N]
                            [--resume auto] [--faults rollout@1,reward@2] [--learner.lr 2e-3] [--set FIELD=VALUE]

Every field of the config is a flag by its dotted path (--learner.max_grad_norm, --rollout.group_size),
typed and checked; hyphens work as well as underscores (--run-name, --output-root). --preset is read
first and the other flags override it. The resolved config is written to <output_root>/<run_name>/config.json.

One step reads as the algorithm: sample prompt sets, roll out G videos
each, score every scene, update the policy with GRPO, push the new weights, log, checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

from inflvg import cli
from inflvg.policy import SelectionPolicy, save_policy
from inflvg.prompts import load_prompts
from inflvg.protocol import BACKENDS, backend_widths
from inflvg.rollout import Rollout, write_parquet
from inflvg.storage import Storage
from learner.checkpoint import latest_checkpoint, load_driver_state, prune_checkpoints

from .config import PRESETS, ServiceConfig, preset, to_json
from .dataplane import measure_step_bytes
from .faults import FaultInjector, parse_faults
from .local_ray import secure_ray_env
from .overrides import apply_overrides
from .recovery import LearnerLost
from .roles import Roles, start_roles
from .sampler import PromptSampler
from .scoring import score_rollouts
from .tracking import Tracker


def step_seeds(seed: int, step: int) -> tuple[int, int]:
    """(noise seed, selection seed) of a step: a function of the step alone, so resume is exact."""
    return seed * 1_000_003 + 2 * step, seed * 1_000_003 + 2 * step + 1


def train_step(step: int, cfg: ServiceConfig, roles: Roles, sampler: PromptSampler, faults: FaultInjector) -> tuple[dict, list]:

    timings, t = {}, time.perf_counter()
    prompt_sets = sampler.next(cfg.prompt_sets_per_step)
    noise_seed, selection_seed = step_seeds(cfg.seed, step)
    with faults.during("rollout", step):
        rollouts = roles.rollouts.rollout(prompt_sets, noise_seed, selection_seed)
    timings["time_rollout"], t = time.perf_counter() - t, time.perf_counter()
    with faults.during("reward", step), faults.during("scorer", step):
        reward = score_rollouts(rollouts, {ps.id: ps for ps in prompt_sets}, roles.rewards, dict(cfg.rewards.weights),
                                cfg.rewards.normalise_components)  # fmt: skip
    timings["time_reward"], t = time.perf_counter() - t, time.perf_counter()
    with faults.during("learner", step):
        learned = roles.update(rollouts, f"step {step}'s update")
        timings["time_learn"], t = time.perf_counter() - t, time.perf_counter()
        weights = roles.push() or roles.weights()[1]  # hybrid ranks act with their new weights already: none pushed
    timings["time_sync"] = time.perf_counter() - t
    families = {fam: g.cfg for fam, g in roles.rewards.items()}
    sizes = measure_step_bytes(rollouts, prompt_sets, weights, families, len(roles.rollouts.handles), cfg.topology,
                               int(learned["optimizer_steps"]))  # bytes_* by category  # fmt: skip
    return {**reward, **learned, **timings, **sizes, "version": int(learned["version"])}, rollouts


def save_rollouts(rollouts: list[Rollout], store: Storage, step: int) -> str:
    """A step's scored rollouts, without their frames, as ``<run>/rollouts/step-000003.parquet``."""
    path = store.path("rollouts", f"step-{step:06d}.parquet")
    write_parquet([replace(r, frames=None) for r in rollouts], path, store.fs)
    return path


def driver_state(step: int, sampler: PromptSampler) -> dict:
    return {"step": step, "sampler": sampler.state()}


def restarts(roles: Roles) -> dict[str, float]:
    """Work sent twice because an actor died (cumulative): prompt sets and reward chunks."""
    return {
        "rollout_reissued": float(roles.rollouts.reissued),
        "reward_retries": float(sum(g.retries for g in roles.rewards.values())),
        "reward_failures": float(sum(g.failures for g in roles.rewards.values())),
    }


def run(cfg: ServiceConfig, resume: str, faults: tuple = (), allow_config_change: bool = False) -> Path:
    run_dir = Path(cfg.output_root) / cfg.run_name  # local: sample videos, the exported policy
    run_dir.mkdir(parents=True, exist_ok=True)
    store = Storage(cfg.storage or cfg.output_root).child(cfg.run_name)
    checkpoints = store.location("checkpoints")
    resumed_from = None if resume == "none" else latest_checkpoint(checkpoints if resume == "auto" else resume)
    if resumed_from is not None:
        check_same_config(cfg, store, allow_config_change)
    store.write_bytes(to_json(cfg).encode(), "config.json")  # the resolved config, flags and --set applied
    roles = start_roles(cfg)
    sampler = PromptSampler(cfg.seed, cfg.n_scenes, cfg.cast_size, cfg.prompts, long=cfg.long_stories)
    step = restore(cfg, roles, sampler, checkpoints, resume)
    tracker = Tracker(cfg, Path(cfg.output_root), tracking_uri(cfg), resumed_from)
    try:
        train_loop(step, cfg, roles, sampler, FaultInjector.for_roles(faults, roles), tracker, store)
        policy_path = export_policy(cfg, roles, run_dir, store)
        model_uri = tracker.log_policy(policy_path)
    except BaseException as e:
        tracker.finish("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    tracker.finish()
    print(f"curves: {tracker.charts_link()}")
    print(f"logged model: {model_uri}")
    print(f"sample videos: {run_dir / 'videos'}")
    print(f"trained policy: {store.location('policy.pt')}")
    return policy_path


def tracking_uri(cfg: ServiceConfig) -> str:
    """The config's, else $MLFLOW_TRACKING_URI, else one SQLite store for every run under output_root."""
    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(cfg.output_root).resolve()}/mlflow.db"


def train_loop(step: int, cfg: ServiceConfig, roles: Roles, sampler: PromptSampler, faults: FaultInjector, tracker: Tracker,
               store: Storage) -> None:  # fmt: skip
    """Steps ``step`` .. cfg.steps - 1, a checkpoint every cfg.checkpoint_every; a lost learner
    is resumed from the last checkpoint and the steps after it run again."""
    checkpoints, step_log = store.location("checkpoints"), StepLog(store, step)
    while step < cfg.steps:
        try:
            logged_step(step, cfg, roles, sampler, faults, tracker, step_log, store)
            # after the log line: a crash in between reruns the step from the previous checkpoint, and
            # resuming drops log lines from the checkpoint's step on, so each step is logged once
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                check_visible(roles.save_checkpoint(checkpoints, driver_state(step + 1, sampler)), checkpoints)
                prune_checkpoints(checkpoints, cfg.keep_checkpoints)
            step += 1
        except LearnerLost as lost:
            step = resume_after_loss(cfg, roles, sampler, checkpoints, lost)
            step_log.truncate(step)


def logged_step(step: int, cfg: ServiceConfig, roles: Roles, sampler: PromptSampler, faults: FaultInjector, tracker: Tracker,
                step_log: StepLog, store: Storage) -> None:  # fmt: skip
    """One training step, then its metrics to MLflow, its line to steps.jsonl and (optionally) its rollouts to Parquet."""
    t0 = time.perf_counter()
    metrics, rollouts = train_step(step, cfg, roles, sampler, faults)
    wall = time.perf_counter() - t0
    busy = metrics["time_rollout"] + metrics["time_reward"] + metrics["time_learn"]
    metrics.update(step_seconds=wall, overhead_fraction=(wall - busy) / wall, videos_per_minute=60 * len(rollouts) / wall, **restarts(roles))
    tracker.log_step(step, metrics)
    if cfg.rollout_parquet:
        save_rollouts(rollouts, store, step)
    if step % cfg.video_every == 0:
        tracker.log_video(step, rollouts[0].frames, rollouts[0].prompts)
    families = {k: metrics[k] for k in sorted(metrics) if k.startswith("reward_") and k.endswith("_mean") and k != "reward_total_mean"}
    frames = sum(len(r.frames) for r in rollouts if r.frames is not None)
    step_log.append({"step": step, "version": metrics["version"], "reward": metrics["reward_total_mean"], **families,
                     "frames_generated": frames, "seconds": wall, **restarts(roles)})  # fmt: skip
    print(f"step {step + 1}/{cfg.steps}  reward {metrics['reward_total_mean']:.3f}  {wall:.1f}s", flush=True)


def check_visible(saved: str, checkpoints: str) -> None:
    """The checkpoint the learner just wrote must be the driver's latest: else the learner wrote to a
    folder of its own node, which a resume would never find."""
    if latest_checkpoint(checkpoints) != saved:
        raise RuntimeError(f"the learner saved {saved}, which the driver does not see under {checkpoints}: the learner runs on "
                           "another node and the storage is a local folder; use --storage with a URI (s3://, gs://, file:// "
                           "on a mount every node shares)")  # fmt: skip


def check_same_config(cfg: ServiceConfig, store: Storage, allow_change: bool) -> None:
    """Refuse to resume a run whose stored config differs from ``cfg``, listing the differences."""
    if not store.exists("config.json"):
        return
    before, now = _flat(json.loads(store.read_bytes("config.json"))), _flat(json.loads(to_json(cfg)))
    # a field the stored config lacks was added by a newer version of this code: not a change of the run
    changed = [f"{k}: {before[k]!r} -> {now.get(k)!r}" for k in sorted(before) if before[k] != now.get(k)]
    if changed and not allow_change:
        raise ValueError(f"the run {store.uri} was started with another config; resuming it would mix two runs. Changed: "
                         f"{'; '.join(changed)}. Use the same flags, --resume none to start over, or --allow-config-change")  # fmt: skip
    if changed:
        print(f"resuming with a changed config (--allow-config-change): {'; '.join(changed)}", flush=True)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


class StepLog:
    """The log of completed steps, ``<run>/steps.jsonl``, one JSON line each, rewritten whole after
    every step (object stores cannot append). Steps at or after ``start_step`` ran after the
    checkpoint we resume from and are run again, so their lines are dropped first."""

    def __init__(self, store: Storage, start_step: int):
        self.store = store
        self.lines = store.read_bytes("steps.jsonl").decode().splitlines() if store.exists("steps.jsonl") else []
        self.truncate(start_step)

    def truncate(self, start_step: int) -> None:
        """Drop the lines of ``start_step`` and later (they are about to run again)."""
        self.lines = [line for line in self.lines if json.loads(line)["step"] < start_step]
        self._write()

    def append(self, record: dict) -> None:
        self.lines.append(json.dumps(record))
        self._write()

    def _write(self) -> None:
        self.store.write_bytes("".join(line + "\n" for line in self.lines).encode(), "steps.jsonl")


def restore(cfg: ServiceConfig, roles: Roles, sampler: PromptSampler, checkpoints: str, resume: str) -> int:
    """-> the first step to run. 'auto': the latest checkpoint if there is one; 'none': start over;
    else a checkpoint (or checkpoint root) by path or URI. The rollout replicas take the
    checkpoint's weights even when they hold newer ones (a learner restarted mid-run)."""
    if resume == "none":
        return 0
    path = latest_checkpoint(checkpoints) if resume == "auto" else resume
    if path is None:
        return 0
    version = roles.load_checkpoint(path)  # the rollout replicas take its weights, older ones included
    state = load_driver_state(path)
    sampler.restore(state["sampler"])
    print(f"resumed from {path} at step {state['step']} (policy version {version})", flush=True)
    return int(state["step"])


def resume_after_loss(cfg: ServiceConfig, roles: Roles, sampler: PromptSampler, checkpoints: str, lost: LearnerLost) -> int:
    """Wait for Ray to restart the learner, restore the last checkpoint (or the start, if there is
    none yet) and push its weights to the rollout workers -> the step to run next. A learner lost
    again meanwhile is waited for again: ``roles.recover`` raises once restarts are used up."""
    while True:
        print(f"{lost}; resuming from the last checkpoint once the learner is back", flush=True)
        try:
            roles.recover()
            step = restore(cfg, roles, sampler, checkpoints, "auto")
            if step == 0:  # no checkpoint yet: the restarted learner holds its seeded initial weights
                sampler.position = 0
                roles.push(rollback=True)
            return step
        except LearnerLost as again:
            lost = again


def export_policy(cfg: ServiceConfig, roles: Roles, run_dir: Path, store: Storage) -> Path:
    """The trained policy as ``run_dir/policy.pt``, copied to ``<storage>/<run>/policy.pt`` when that is elsewhere."""
    _, weights = roles.weights()
    policy = SelectionPolicy(cfg.learner.policy)
    policy.load_state_dict(weights)
    path = run_dir / "policy.pt"
    save_policy(policy, path)
    if store.location("policy.pt") != str(path.resolve()):
        store.write_bytes(path.read_bytes(), "policy.pt")
    return path


@dataclass(frozen=True)
class TrainArgs:
    """What ``python -m cluster.train`` runs: a ServiceConfig, every field a flag by its dotted
    path, and how to start it."""

    config: Annotated[ServiceConfig, cli.Flat] = field(default_factory=ServiceConfig)
    """The training service's config (cluster/config.py); its fields are the flags below."""
    generator: Annotated[str, cli.choice(BACKENDS)] | None = None
    """The generator by name, applied after every other flag: sets rollout.generator and the
    policy's input widths (learner.policy.d_feature, d_prompt) to its features'; None: the preset's."""
    resume: str = "auto"
    """'auto' (the latest checkpoint of this run, if any), 'none' (start over), or a checkpoint path or URI."""
    allow_config_change: bool = False
    """Resume even if the run's stored config.json differs from this one (the differences are printed);
    without it such a resume is refused with the differences listed."""
    faults: str | None = None
    """Fault injection, e.g. rollout@1,reward@2: kill that actor during that step."""
    overrides: Annotated[tuple[str, ...], cli.arg(name="set", metavar="FIELD=VALUE"), cli.Repeated] = ()
    """Override any config field by its dotted path, e.g. --set learner.lr=2e-3 --set rollout.group_size=8.
    Read by the field's type (tuples as Python literals) and applied after the flags, all at once: fields
    checked together (rewards.alignment.model_name and .checkpoint) may come in either order."""


PROG = "python -m cluster.train"
PRESET_HELP = "The config the other flags start from. " + " ".join(f"{name}: {make.__doc__}" for name, make in PRESETS.items())


def parse_args(argv: list[str] | None = None) -> tuple[ServiceConfig, str, tuple, bool]:
    """(the resolved config, resume, faults, allow_config_change) from the command line; a bad flag or value exits with status 2."""
    args = cli.parse(TrainArgs, argv, prog=PROG, description=__doc__, presets={n: lambda n=n: TrainArgs(config=preset(n)) for n in PRESETS},
                     preset="storyworld", preset_help=PRESET_HELP, underscores=True)  # fmt: skip
    with cli.usage_errors(PROG):
        faults = parse_faults(args.faults)
        cfg = apply_overrides(args.config, args.overrides)
        if args.generator:
            cfg = with_generator(cfg, args.generator)
        if cfg.prompts:
            load_prompts(cfg.prompts)  # a bad row fails here, before Ray or any step starts
    return cfg, args.resume, faults, args.allow_config_change


def main(argv: list[str] | None = None) -> Path:
    cfg, resume, faults, allow_config_change = parse_args(argv)
    stop_on_signals()
    ray_init()
    try:
        return run(cfg, resume, faults, allow_config_change)
    finally:
        import ray

        ray.shutdown()  # stops the local Ray this driver started; a cluster's stays up


def stop_on_signals() -> None:
    """SIGINT and SIGTERM (``ray job stop`` sends it) stop the run: Ctrl-C semantics, the MLflow run
    ends KILLED and a local Ray is shut down. Set explicitly: a process started in the background
    by a shell inherits SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def with_generator(cfg: ServiceConfig, name: str) -> ServiceConfig:
    """The config with the rollout workers on generator ``name`` and a policy as wide as its features."""
    d_feature, d_prompt = backend_widths(name, cfg.rollout.generator_weights)
    policy = replace(cfg.learner.policy, d_feature=d_feature, d_prompt=d_prompt)
    return replace(cfg, rollout=replace(cfg.rollout, generator=name), learner=replace(cfg.learner, policy=policy))


def ray_init() -> None:
    """Join the cluster a `ray job submit` runs us in; otherwise start a single-machine Ray on loopback."""
    if not os.environ.get("RAY_ADDRESS"):
        secure_ray_env()  # before Ray is imported: it reads its network mode then
    import ray

    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
    else:
        ray.init(address="local", include_dashboard=False, log_to_driver=True)


if __name__ == "__main__":
    main()
