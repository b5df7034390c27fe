"""The debug preset end to end, submitted with `ray job submit` to a real local Ray head, then
resumed: every step runs exactly once, a policy is written, MLflow holds the curves."""

import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

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
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path_factory.mktemp("ray")), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    subprocess.run([str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True, timeout=180)  # fmt: skip
    yield f"http://127.0.0.1:{dash}", env
    subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


def submit(address: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    runtime_env = json.dumps({"env_vars": {"OMP_NUM_THREADS": "1"}})
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO), "--runtime-env-json", runtime_env,
           "--", sys.executable, "-m", "cluster.train", "--preset", "debug", *args]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def test_debug_preset_via_ray_job_submit_and_resume(ray_head, tmp_path):
    address, env = ray_head
    first = submit(address, env, "--steps", "1", "--output-root", str(tmp_path))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = submit(address, env, "--steps", "2", "--output-root", str(tmp_path))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resumed from" in second.stdout and "at step 1" in second.stdout
    run = tmp_path / "debug"
    steps = [json.loads(line)["step"] for line in (run / "steps.jsonl").read_text().splitlines()]
    assert steps == [0, 1]  # nothing lost, nothing doubled
    assert (run / "policy.pt").stat().st_size > 0 and f"trained policy: {run / 'policy.pt'}" in second.stdout
    db = sqlite3.connect(run / "mlflow.db")
    keys = {k for (k,) in db.execute("select distinct key from metrics")}
    assert {"reward_total_mean", "clip_fraction", "overhead_fraction", "time_rollout", "videos_per_minute"} <= keys
    assert list((run / "videos").glob("*.gif"))
