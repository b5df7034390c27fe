"""The debug preset end to end, submitted with `ray job submit` to a real local Ray head: an
undisturbed run; a run whose rollout and reward actors are killed mid-step; a run whose job is
stopped mid-way and resumed. Each runs every step exactly once and ends with the same weights.
And a run on a free-text prompt file."""

import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    port, dash = free_port(), free_port()
    # token authentication on, with a token of our own that both the head and the CLI read
    # no MLFLOW_TRACKING_URI: mlflow.set_tracking_uri in an earlier test of this process sets it, and
    # the jobs would log there instead of their own <output_root>/mlflow.db
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"RAY_TMPDIR": str(tmp_path_factory.mktemp("ray")), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    subprocess.run([str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={free_port()}",
                    "--num-cpus=2", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True, timeout=180)  # fmt: skip
    yield f"http://127.0.0.1:{dash}", env
    # only this head: `ray stop` would also stop every other Ray on the machine (a user's demo)
    for sig in ("-TERM", "-KILL"):
        subprocess.run(["pkill", sig, "-f", env["RAY_TMPDIR"]], check=False, capture_output=True, timeout=60)  # exit 1: nothing left to stop
        time.sleep(2)


def submit(address: str, env: dict, *args: str, wait: bool = True) -> subprocess.CompletedProcess:
    runtime_env = json.dumps({"env_vars": {"OMP_NUM_THREADS": "1"}})
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO), "--runtime-env-json", runtime_env,
           *([] if wait else ["--no-wait"]), "--", sys.executable, "-m", "cluster.train", "--preset", "debug", *args]  # fmt: skip
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=900)


def logged_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "steps.jsonl").read_text().splitlines()]


def max_weight_difference(a: Path, b: Path) -> float:
    wa, wb = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b))
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


@pytest.fixture(scope="module")
def reference(ray_head, tmp_path_factory):
    """An undisturbed 3-step debug run: (its run folder, the job's stdout)."""
    address, env = ray_head
    root = tmp_path_factory.mktemp("reference")
    done = submit(address, env, "--output-root", str(root))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root / "debug", done.stdout


def test_debug_preset_via_ray_job_submit(reference):
    run, stdout = reference
    assert logged_steps(run) == [0, 1, 2]
    assert (run / "policy.pt").stat().st_size > 0 and f"trained policy: {run / 'policy.pt'}" in stdout
    db = sqlite3.connect(run.parent / "mlflow.db")  # one store for every run under the output root
    keys = {k for (k,) in db.execute("select distinct key from metrics")}
    assert {"reward_total_mean", "clip_fraction", "overhead_fraction", "time_rollout", "videos_per_minute", "rollout_reissued",
            "bytes_step", "bytes_rollouts_to_learner"} <= keys
    assert db.execute("select status from runs").fetchall() == [("FINISHED",)]
    assert list((run / "videos").glob("*.gif"))
    import mlflow.pytorch

    from inflvg.policy import load_policy

    mlflow.set_tracking_uri(f"sqlite:///{run.parent / 'mlflow.db'}")
    uri = next(line.split(": ", 1)[1] for line in stdout.splitlines() if line.startswith("logged model: "))
    logged, saved = mlflow.pytorch.load_model(uri), load_policy(run / "policy.pt")
    assert all(torch.equal(v, saved.state_dict()[k]) for k, v in logged.state_dict().items())


def test_actors_killed_mid_step_lose_and_double_nothing(ray_head, reference, tmp_path):
    address, env = ray_head
    done = submit(address, env, "--output-root", str(tmp_path), "--faults", "rollout@1,reward@2,learner@1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "killed the rollout actor during step 1" in done.stdout and "killed the reward actor during step 2" in done.stdout
    assert "killed the learner actor during step 1" in done.stdout and "the learner died" in done.stdout
    assert "resumed from" in done.stdout  # the restarted learner took the checkpoint after step 0, in the same job
    run = tmp_path / "debug"
    assert logged_steps(run) == [0, 1, 2]  # nothing lost, nothing doubled
    last = json.loads((run / "steps.jsonl").read_text().splitlines()[-1])
    assert last["rollout_reissued"] >= 1 and last["reward_failures"] == 0
    assert last["frames_generated"] == 2 * 2 * 4 * 4 and "reward_identity_mean" in last  # debug: 2 sets x 2 rollouts x 4 scenes x 4 frames
    diff = max_weight_difference(run / "policy.pt", reference[0] / "policy.pt")
    print(f"max |weights - undisturbed run| after three actor kills: {diff:.3g}")
    assert diff == 0.0  # re-issued work gives the same rollouts and scores, so the same updates


def test_two_hybrid_ranks_train_as_the_one_learner_did_through_kills(ray_head, reference, tmp_path):
    """Two rollout replicas that are DeepSpeed ranks over gloo, through `ray job submit`: rank 0 killed while
    rolling out and again while learning, each time a new world resumes from the checkpoint both ranks wrote."""
    address, env = ray_head
    done = submit(address, env, "--output-root", str(tmp_path), "--topology", "hybrid", "--rollout.replicas", "2",
                  "--faults", "rollout@1,learner@2")  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("resumed from") == 2 and "killed the learner actor during step 2" in done.stdout
    run = tmp_path / "debug"
    assert logged_steps(run) == [0, 1, 2]
    diff = max_weight_difference(run / "policy.pt", reference[0] / "policy.pt")
    print(f"max |weights of 2 hybrid ranks - the one learner's| after two kills: {diff:.3g}")
    assert diff <= 1e-5  # the same updates, gradients summed in another order
    db = sqlite3.connect(run.parent / "mlflow.db")
    moved = dict(db.execute("select key, max(value) from metrics where key like 'bytes_%' group by key").fetchall())
    assert moved["bytes_rollouts_to_learner"] == moved["bytes_weights_to_workers"] == 0 and moved["bytes_gradients_allreduce"] > 0


def test_a_killed_driver_resumes_to_the_weights_of_an_undisturbed_run(ray_head, reference, tmp_path):
    """Through a storage URI (pyarrow.fs, as s3:// would be): checkpoints, steps.jsonl and policy.pt
    go there, and the local run folder holds none of them."""
    address, env = ray_head
    storage = f"file://{tmp_path}/store"
    started = submit(address, env, "--output-root", str(tmp_path / "local"), "--storage", storage, wait=False)
    assert started.returncode == 0, started.stdout + started.stderr
    run, deadline = tmp_path / "store" / "debug", time.monotonic() + 600
    while not (run / "checkpoints" / "latest").exists():  # the first checkpoint: after step 0
        assert time.monotonic() < deadline, "no checkpoint written in 10 minutes"
        time.sleep(0.2)
    pattern = f"cluster.train --preset debug --output-root {tmp_path}"
    drivers = subprocess.run(["pgrep", "-f", pattern], check=False, capture_output=True, text=True)  # none found: asserted below
    for pid in drivers.stdout.split():
        os.kill(int(pid), signal.SIGKILL)  # a crash mid-run: no cleanup, no final checkpoint
    assert drivers.stdout.split() and not (run / "policy.pt").exists()
    changed = submit(address, env, "--output-root", str(tmp_path / "local"), "--storage", storage, "--learner.lr", "0.5")
    assert changed.returncode != 0 and "learner.lr: 0.0001 -> 0.5" in changed.stdout + changed.stderr
    resumed = submit(address, env, "--output-root", str(tmp_path / "local"), "--storage", storage)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from file://" in resumed.stdout
    assert logged_steps(run) == [0, 1, 2]  # the steps after the checkpoint ran again, each logged once
    assert not (tmp_path / "local" / "debug" / "checkpoints").exists() and not (tmp_path / "local" / "debug" / "steps.jsonl").exists()
    diff = max_weight_difference(run / "policy.pt", reference[0] / "policy.pt")
    print(f"max |weights - undisturbed run| after a kill and resume: {diff:.3g}")
    assert diff == 0.0


def test_a_free_text_prompt_file_trains_through_ray_job_submit(ray_head, tmp_path):
    """InfLVG-format rows (6 scenes, free text, no tags): the file sets the scene count, whatever the preset says.
    And a scorer that raises on a quarter of the scenes: the run completes, those scenes masked and counted."""
    address, env = ray_head
    done = submit(address, env, "--prompts", "tests/data/free_text.jsonl", "--run-name", "freetext", "--output-root", str(tmp_path),
                  "--faults", "scorer@0")  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "freetext"
    assert logged_steps(run) == [0, 1, 2] and (run / "policy.pt").stat().st_size > 0
    sample = json.loads((run / "videos" / "step00000.json").read_text())
    rows = [json.loads(line) for line in (REPO / "tests" / "data" / "free_text.jsonl").read_text().splitlines()]
    assert len(sample["prompts"]) == 6 and sample["prompts"] in [[r[str(i)] for i in range(6)] for r in rows]
    db = sqlite3.connect(tmp_path / "mlflow.db")
    totals = dict(db.execute("select key, sum(value) from metrics where key in ('masked_artifacts', 'scorer_errors_artifacts') group by key"))
    assert totals["scorer_errors_artifacts"] > 0 and totals["masked_artifacts"] == totals["scorer_errors_artifacts"]


def test_a_bad_prompt_file_fails_before_anything_starts(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"0": "A dog runs", "1": "The dog sleeps"}\n{"0": "A cat", "subjects": ["dog"]}\n')
    r = subprocess.run([sys.executable, "-m", "cluster.train", "--preset", "debug", "--prompts", str(bad), "--output-root", str(tmp_path / "runs")],
                       check=False, capture_output=True, text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert r.returncode == 2 and f"{bad}:2, key 'subjects': subject tag 'dog'" in r.stderr
    assert not (tmp_path / "runs").exists()  # nothing half-trained


def test_the_wan_backend_trains_through_ray_job_submit(ray_head, tmp_path):
    """--generator wan-tiny: 2 GRPO steps on a free-text file; the policy, as wide as the backend's features, moves."""
    from cluster.config import preset
    from cluster.train import with_generator
    from inflvg.policy import SelectionPolicy, load_policy

    address, env = ray_head
    done = submit(address, env, "--generator", "wan-tiny", "--prompts", "tests/data/free_text.jsonl", "--steps", "2",
                  "--run-name", "wan", "--output-root", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "wan"
    assert logged_steps(run) == [0, 1] and json.loads((run / "steps.jsonl").read_text().splitlines()[-1])["version"] == 2
    cfg = with_generator(preset("debug"), "wan-tiny").learner
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        start = SelectionPolicy(cfg.policy)  # the learner's initial weights
    trained = load_policy(run / "policy.pt")
    assert trained.cfg.d_feature == 48 and any(not torch.equal(v, start.state_dict()[k]) for k, v in trained.state_dict().items())
