"""`python -m serving` as the project runs it: refuses to bind beyond loopback without an API
key, or a prompt file it cannot read; on loopback it starts its own Ray and Serve, answers
/healthz, serves a video of free-text prompts, refuses 'learned' without a policy, cuts a request
off at its timeout, and stops on SIGINT."""

import base64
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
import requests

from inflvg.prompts import load_prompts
from serving.schema import example_scenes

REPO = Path(__file__).resolve().parent.parent
FREE_TEXT = REPO / "tests" / "data" / "free_text.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "INFLVG_API_KEY"}
    # a Ray of its own, never a cluster someone else started on this machine
    return {**env, "RAY_ADDRESS": "local", "OMP_NUM_THREADS": "1"}


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_refuses_to_bind_beyond_loopback_without_an_api_key():
    port = free_port()
    run = subprocess.run([sys.executable, "-m", "serving", "--host", "0.0.0.0", "--port", str(port)],
                         check=False, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode != 0 and "refusing to bind 0.0.0.0" in run.stderr and "INFLVG_API_KEY" in run.stderr
    assert not listening(port)


@pytest.mark.parametrize(("prompts", "message"), [
    ("no/such/file.jsonl", "prompt file 'no/such/file.jsonl' does not exist"),
    (str(REPO / "pyproject.toml"), "not valid JSON"),
])  # fmt: skip
def test_refuses_a_prompt_file_it_cannot_serve(prompts, message, capsys):
    from cluster.serve import check_files, main

    with pytest.raises(SystemExit) as e:
        main(["--prompts", prompts])  # fails while checking the config: nothing starts
    err = capsys.readouterr().err
    assert e.value.code == 2 and "error:" in err and "prompts" in err and message in err
    with pytest.raises(SystemExit):
        main(["--prompts", str(FREE_TEXT), "--max-scenes", "4"])
    assert "max_scenes" in capsys.readouterr().err
    from serving.config import ServeConfig

    check_files(ServeConfig(prompts=str(FREE_TEXT)))


@contextlib.contextmanager
def running_server(cmd: list[str], env: dict, log: Path, url: str, seconds: float, what: str):
    """Start ``cmd`` from the repository, wait until ``url``/healthz answers 200 and yield the
    process; at the end SIGINT it (killed after 60 s). Its output goes to ``log``."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + seconds
        while time.time() < deadline and proc.poll() is None:
            try:
                if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or routes not ready
                pass
            time.sleep(1)
        else:
            pytest.fail(f"{what} did not become healthy:\n{log.read_text()[-3000:]}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory):
    port = free_port()
    # tight timeout and room for a long video, so that one request can outlast it
    cmd = [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port), "--request-timeout-s", "4", "--max-scenes", "32",
           "--prompts", str(FREE_TEXT.relative_to(REPO))]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with running_server(cmd, cli_env(), tmp_path_factory.mktemp("cli") / "serving.log", url, 240, "python -m serving") as proc:
        yield url, proc


def test_cli_serves_a_video_of_free_text(cli_server):
    url, _ = cli_server
    row = requests.get(f"{url}/v1/example", params={"row": 1}, timeout=30).json()
    assert row["scenes"] == list(load_prompts(FREE_TEXT)[1].scenes)
    r = requests.post(f"{url}/v1/videos", json={"scenes": row["scenes"][:2], "frames_per_scene": 3, "seed": 1}, timeout=120)
    assert r.status_code == 200, r.text
    with av.open(io.BytesIO(base64.b64decode(r.json()["video"]))) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (256, 256, 3) and r.json()["strategy"] == "far" and r.json()["unknown_words"] > 0


def test_cli_without_policy_refuses_learned(cli_server):
    url, _ = cli_server
    r = requests.post(f"{url}/v1/videos", json={"scenes": example_scenes(0, 2), "strategy": "learned"}, timeout=60)
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "strategy" and "no policy is loaded" in r.json()["detail"]


def test_request_past_its_timeout_gets_504_and_the_server_goes_on(cli_server):
    url, _ = cli_server
    start = time.time()
    r = requests.post(f"{url}/v1/videos", json={"scenes": example_scenes(0, 32), "frames_per_scene": 8}, timeout=120)
    assert r.status_code == 504 and "request_timeout_s" in r.json()["detail"]
    assert time.time() - start < 20
    after = requests.post(f"{url}/v1/videos", json={"scenes": example_scenes(1, 1), "frames_per_scene": 1}, timeout=60)
    assert after.status_code == 200


def test_sigint_stops_the_server(cli_server):
    url, proc = cli_server
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=5)
