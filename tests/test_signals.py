"""`python -m serving` and `python -m cluster.train`, started in the background by a shell script
(which makes them inherit SIGINT ignored), stop within 15 s of SIGINT and of SIGTERM and leave no
Ray process behind. While the server runs, every TCP socket its process tree listens on is on
127.0.0.1 or refuses a client without the Ray token."""

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
READY = {"serving": "serving on http://", "train": "step 1/"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(entry: str, tmp: Path) -> list[str]:
    if entry == "serving":
        return [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(free_port())]
    return [sys.executable, "-m", "cluster.train", "--preset", "debug", "--steps", "50", "--output-root", str(tmp / "runs")]


def ray_processes(ray_tmp: str) -> list[psutil.Process]:
    """Processes of the Ray instance rooted in ``ray_tmp`` (its session folder is in their command lines)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(ray_tmp in part for part in p.info["cmdline"] or ()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def start_in_background(entry: str, tmp: Path, ray_tmp: str) -> tuple[int, Path]:
    """A shell script that starts the entry point with & and exits: -> (its pid, its log)."""
    log = tmp / f"{entry}.log"
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "OMP_NUM_THREADS": "1"}
    line = " ".join(command(entry, tmp)) + f" > {log} 2>&1 & echo $!"
    pid = int(subprocess.run(["bash", "-c", line], cwd=REPO, env=env, capture_output=True, text=True, check=True, timeout=30).stdout)
    deadline = time.monotonic() + 420
    while READY[entry] not in (log.read_text() if log.exists() else ""):
        assert psutil.pid_exists(pid), f"{entry} exited before it was ready:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{entry} not ready in 7 minutes:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    return pid, log


def stop_within(pid: int, sig: signal.Signals, ray_tmp: str, seconds: float) -> float:
    """Send ``sig``; -> seconds until the process and every Ray process of its instance are gone."""
    t0 = time.monotonic()
    os.kill(pid, sig)
    while (psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE) or ray_processes(ray_tmp):
        if time.monotonic() - t0 > seconds:
            break
        time.sleep(0.2)
    return time.monotonic() - t0


def loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1, an IPv6 socket bound to the IPv4 loopback
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


def listening_sockets(pid: int) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every TCP socket that the process tree of ``pid`` listens on."""
    root = psutil.Process(pid)
    out = set()
    for p in [root, *root.children(recursive=True)]:
        try:
            out |= {(c.laddr.ip, c.laddr.port, p.name()) for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return sorted(out)


# one method of each gRPC service a Ray node serves: GCS, raylet, object manager, core worker, agent (OpenTelemetry)
RAY_METHODS = ("/ray.rpc.NodeInfoGcsService/GetAllNodeInfo", "/ray.rpc.NodeManagerService/GetNodeStats", "/ray.rpc.ObjectManagerService/Pull",
               "/ray.rpc.CoreWorkerService/GetCoreWorkerStats", "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")  # fmt: skip


def answers_without_token(port: int) -> str | None:
    """What a client without the Ray token gets from ``port``: an HTTP 2xx page (a metrics or
    dashboard endpoint; health checks excepted) or any gRPC answer but 'unauthenticated' from a
    service the server implements -> a description; refused -> None."""
    import http.client
    import urllib.error
    import urllib.request

    import grpc

    for path in ("/", "/metrics", "/api/job_agent/jobs/"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
                return f"HTTP {r.status} on {path}"
        except urllib.error.HTTPError:
            continue  # 401, 404: refused
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
            break  # not HTTP/1: try gRPC
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        for method in RAY_METHODS:
            try:
                channel.unary_unary(method)(b"", timeout=3)
                return f"{method} answered"
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE):
                    return f"{method}: {e.code().name}"
    finally:
        channel.close()
    return None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("entry", ["serving", "train"])
def test_a_background_entry_point_stops_on_a_signal_and_leaves_no_ray(entry, sig, tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths have a length limit
    try:
        pid, log = start_in_background(entry, tmp_path, ray_tmp)
        if entry == "serving" and sig == signal.SIGINT:
            listening = [(ip, port, name) for ip, port, name in listening_sockets(pid) if not loopback(ip)]
            exposed = [(ip, port, name, what) for ip, port, name in listening if (what := answers_without_token(port))]
            assert not exposed, f"sockets open to the network without the token: {exposed}"
        took = stop_within(pid, sig, ray_tmp, 15.0)
        left = ray_processes(ray_tmp)
        assert not left and took <= 15.0, f"{entry} took {took:.1f} s after {sig.name}; left: {[p.pid for p in left]}\n{log.read_text()[-2000:]}"
    finally:
        for p in ray_processes(ray_tmp):
            p.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
