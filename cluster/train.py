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
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, cast

from inflvg import cli
from inflvg.policy import SelectionPolicy, save_policy
from inflvg.prompts import load_prompts
from inflvg.protocol import BACKENDS, backend_widths
from inflvg.rollout import Rollout, write_parquet
from learner.checkpoint import latest_checkpoint, load_driver_state, prune_checkpoints

from .config import PRESETS, ServiceConfig, preset, to_json
from .faults import FaultInjector, parse_faults
from .overrides import apply_overrides
from .roles import Roles, start_roles
from .sampler import PromptSampler
from .scoring import score_rollouts
from .tracking import Tracker


def step_seeds(seed: int, step: int) -> tuple[int, int]:
    """(noise seed, selection seed) of a step: a function of the step alone, so resume is exact."""
    return seed * 1_000_003 + 2 * step, seed * 1_000_003 + 2 * step + 1


def train_step(step: int, cfg: ServiceConfig, roles: Roles, sampler: PromptSampler, faults: FaultInjector) -> tuple[dict, list]:
    import ray

    timings, t = {}, time.perf_counter()
    prompt_sets = sampler.next(cfg.prompt_sets_per_step)
    noise_seed, selection_seed = step_seeds(cfg.seed, step)
    with faults.during("rollout", step):
        rollouts = roles.rollouts.rollout(prompt_sets, noise_seed, selection_seed)
    timings["time_rollout"], t = time.perf_counter() - t, time.perf_counter()
    with faults.during("reward", step):
        reward = score_rollouts(rollouts, {ps.id: ps for ps in prompt_sets}, roles.rewards, dict(cfg.rewards.weights),
                                cfg.rewards.normalise_components)  # fmt: skip
    timings["time_reward"], t = time.perf_counter() - t, time.perf_counter()
    # ray.get of an untyped ObjectRef matches its list overload: cast to what Learner.update returns
    learned = cast("dict[str, float]", ray.get(roles.learner.update.remote(rollouts)))
    timings["time_learn"], t = time.perf_counter() - t, time.perf_counter()
    version, weights = ray.get(roles.learner.weights.remote())
    roles.rollouts.sync(version, ray.put(weights))
    timings["time_sync"] = time.perf_counter() - t
    return {**reward, **learned, **timings, "version": version}, rollouts


def save_rollouts(rollouts: list[Rollout], run_dir: Path, step: int) -> Path:
    """A step's scored rollouts, without their frames, as ``run_dir/rollouts/step-000003.parquet``."""
    path = run_dir / "rollouts" / f"step-{step:06d}.parquet"
    write_parquet([replace(r, frames=None) for r in rollouts], path)
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


def run(cfg: ServiceConfig, resume: str, faults: tuple = ()) -> Path:
    run_dir = Path(cfg.output_root) / cfg.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(to_json(cfg))  # the resolved config, flags and --set applied
    roles = start_roles(cfg)
    sampler = PromptSampler(cfg.seed, cfg.n_scenes, cfg.cast_size, cfg.prompts)
    start_step = restore(cfg, roles, sampler, run_dir / "checkpoints", resume)
    tracker = Tracker(cfg, run_dir, cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{run_dir.resolve()}/mlflow.db")
    step_log = open_step_log(run_dir / "steps.jsonl", start_step)
    target = roles.rewards.get("identity") or next(iter(roles.rewards.values()))
    injector = FaultInjector(faults, {"rollout": roles.rollouts.handles[0], "reward": target.handles[0]})
    for step in range(start_step, cfg.steps):
        t0 = time.perf_counter()
        metrics, rollouts = train_step(step, cfg, roles, sampler, injector)
        wall = time.perf_counter() - t0
        busy = metrics["time_rollout"] + metrics["time_reward"] + metrics["time_learn"]
        metrics.update(step_seconds=wall, overhead_fraction=(wall - busy) / wall, videos_per_minute=60 * len(rollouts) / wall, **restarts(roles))
        tracker.log_step(step, metrics)
        if cfg.rollout_parquet:
            save_rollouts(rollouts, run_dir, step)
        if step % cfg.video_every == 0:
            tracker.log_video(step, rollouts[0].frames, rollouts[0].prompts)
        record = {"step": step, "version": metrics["version"], "reward": metrics["reward_total_mean"], "seconds": wall, **restarts(roles)}
        step_log.write(json.dumps(record) + "\n")
        step_log.flush()
        print(f"step {step + 1}/{cfg.steps}  reward {metrics['reward_total_mean']:.3f}  {wall:.1f}s", flush=True)
        # after the log line: a crash in between reruns the step from the previous checkpoint, and
        # resuming drops log lines from the checkpoint's step on, so each step is logged once
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            import ray

            ray.get(roles.learner.save_checkpoint.remote(str(run_dir / "checkpoints"), driver_state(step + 1, sampler)))
            prune_checkpoints(run_dir / "checkpoints", cfg.keep_checkpoints)
    policy_path = export_policy(cfg, roles, run_dir)
    model_uri = tracker.log_policy(policy_path)
    run_id = tracker.finish()
    print(f"curves: MLflow run {run_id} at {tracker.uri} (experiment 'inflvg')")
    print(f"logged model: {model_uri}")
    print(f"sample videos: {run_dir / 'videos'}")
    print(f"trained policy: {policy_path}")
    return policy_path


def open_step_log(path: Path, start_step: int):
    """The log of completed steps, one JSON line each. Steps at or after ``start_step`` ran after
    the checkpoint we resume from and are run again, so their lines are dropped first."""
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] < start_step] if path.exists() else []
    path.write_text("".join(line + "\n" for line in kept))
    return open(path, "a")


def restore(cfg: ServiceConfig, roles: Roles, sampler: PromptSampler, ckpt_root: Path, resume: str) -> int:
    """-> the first step to run. 'auto': the latest checkpoint if there is one; 'none': start over."""
    import ray

    if resume == "none":
        return 0
    path = latest_checkpoint(ckpt_root) if resume == "auto" else Path(resume)
    if path is None:
        return 0
    version = cast(int, ray.get(roles.learner.load_checkpoint.remote(str(path))))  # Learner.load_checkpoint's version
    state = load_driver_state(path)
    sampler.restore(state["sampler"])
    _, weights = ray.get(roles.learner.weights.remote())
    roles.rollouts.sync(version, ray.put(weights))
    print(f"resumed from {path} at step {state['step']} (policy version {version})", flush=True)
    return int(state["step"])


def export_policy(cfg: ServiceConfig, roles: Roles, run_dir: Path) -> Path:
    import ray

    _, weights = ray.get(roles.learner.weights.remote())
    policy = SelectionPolicy(cfg.learner.policy)
    policy.load_state_dict(weights)
    path = run_dir / "policy.pt"
    save_policy(policy, path)
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
    """'auto' (the latest checkpoint of this run, if any), 'none' (start over), or a checkpoint path."""
    faults: str | None = None
    """Fault injection, e.g. rollout@1,reward@2: kill that actor during that step."""
    overrides: Annotated[tuple[str, ...], cli.arg(name="set", metavar="FIELD=VALUE"), cli.Repeated] = ()
    """Override any config field by its dotted path, e.g. --set learner.lr=2e-3 --set rollout.group_size=8.
    Read by the field's type (tuples as Python literals) and applied after the flags, all at once: fields
    checked together (rewards.alignment.model_name and .checkpoint) may come in either order."""


PROG = "python -m cluster.train"
PRESET_HELP = "The config the other flags start from. " + " ".join(f"{name}: {make.__doc__}" for name, make in PRESETS.items())


def parse_args(argv: list[str] | None = None) -> tuple[ServiceConfig, str, tuple]:
    """(the resolved config, resume, faults) from the command line; a bad flag or value exits with status 2."""
    args = cli.parse(TrainArgs, argv, prog=PROG, description=__doc__, presets={n: lambda n=n: TrainArgs(config=preset(n)) for n in PRESETS},
                     preset="storyworld", preset_help=PRESET_HELP, underscores=True)  # fmt: skip
    with cli.usage_errors(PROG):
        faults = parse_faults(args.faults)
        cfg = apply_overrides(args.config, args.overrides)
        if args.generator:
            cfg = with_generator(cfg, args.generator)
        if cfg.prompts:
            load_prompts(cfg.prompts)  # a bad row fails here, before Ray or any step starts
    return cfg, args.resume, faults


def main(argv: list[str] | None = None) -> Path:
    cfg, resume, faults = parse_args(argv)
    ray_init()
    return run(cfg, resume, faults)


def with_generator(cfg: ServiceConfig, name: str) -> ServiceConfig:
    """The config with the rollout workers on generator ``name`` and a policy as wide as its features."""
    d_feature, d_prompt = backend_widths(name, cfg.rollout.generator_weights)
    policy = replace(cfg.learner.policy, d_feature=d_feature, d_prompt=d_prompt)
    return replace(cfg, rollout=replace(cfg.rollout, generator=name), learner=replace(cfg.learner, policy=policy))


def ray_init() -> None:
    """Join the cluster a `ray job submit` runs us in; otherwise start a local Ray on 127.0.0.1."""
    import ray

    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
    else:
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=True)


if __name__ == "__main__":
    main()
