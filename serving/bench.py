"""Load benchmark of the Serve app on loopback: latency (p50, p99) and throughput of
POST /v1/videos under concurrent clients, with dynamic batching and without.

    python -m serving.bench --out results/serve_bench.json     # about 4 minutes on 2 CPU cores

One local Ray; the app is redeployed between phases:
    load       max_batch_size 8, --clients (16) for --duration (60 s): zero errors expected
    batched    max_batch_size 8, --compare-clients (8) for --compare-duration (15 s) per round
    unbatched  max_batch_size 1, the same; --rounds (2) rounds alternate batched and unbatched
Each client sends held-out prompt sets in turn (--scenes x --frames-per-scene, strategy 'far',
MP4, the default seed), so requests differ only by their prompts and the server may batch them.
Writes FILE.json and FILE.md; prints the table.
"""

from __future__ import annotations

import os
import platform
import socket
import threading
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from inflvg import cli
from inflvg.validate import number, positive_int

from .config import ServeConfig
from .schema import example_scenes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_loop(url: str, bodies: list[dict], first: int, step: int, stop_at: float, n_frames: int, out: list) -> None:
    """Send requests back to back until ``stop_at``; append (latency s, ok, batch size) per request."""
    import requests

    session, k = requests.Session(), first
    while time.time() < stop_at:
        start, ok, batch = time.perf_counter(), False, 0
        try:
            r = session.post(url, json=bodies[k % len(bodies)], timeout=300)
            ok = r.status_code == 200 and r.json()["n_frames"] == n_frames
            batch = r.json()["batch_size"] if ok else 0
        except (requests.RequestException, ValueError, KeyError):
            pass
        out.append((time.perf_counter() - start, ok, batch))
        k += step


def run_phase(url: str, bodies: list[dict], clients: int, duration: float, n_frames: int) -> tuple[list, float]:
    """-> (per request (latency s, ok, batch size), wall seconds until the last one finished)."""
    results: list = []
    start = time.time()
    threads = [threading.Thread(target=client_loop, args=(url, bodies, i, clients, start + duration, n_frames, results)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.time() - start


def summarize(results: list, wall: float, clients: int, duration: float, max_batch_size: int) -> dict:
    latency = np.array([r[0] for r in results]) * 1000
    ok = [r for r in results if r[1]]
    return {
        "max_batch_size": max_batch_size, "clients": clients, "duration_s": duration, "wall_s": wall, "requests": len(results),
        "errors": len(results) - len(ok), "p50_ms": float(np.percentile(latency, 50)), "p99_ms": float(np.percentile(latency, 99)),
        "throughput_rps": len(ok) / wall, "mean_batch": float(np.mean([r[2] for r in ok])) if ok else 0.0,
    }  # fmt: skip


def deploy(cfg: ServeConfig, url: str, bodies: list[dict], n_frames: int) -> None:
    """(Re)deploy the app and warm it up (first requests pay for lazy initialisation)."""
    from ray import serve

    from .app import APP_NAME, compose

    serve.run(compose(cfg, None), name=APP_NAME, route_prefix="/")
    run_phase(url, bodies, cfg.max_batch_size, 3.0, n_frames)


def markdown(result: dict) -> str:
    rows = ["| phase | max batch | clients | duration s | requests | errors | p50 ms | p99 ms | requests/s | mean batch |",
            "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, p in result["phases"].items():
        rows.append(f"| {name} | {p['max_batch_size']} | {p['clients']} | {p['duration_s']:.0f} | {p['requests']} | {p['errors']} | "
                    f"{p['p50_ms']:.0f} | {p['p99_ms']:.0f} | {p['throughput_rps']:.2f} | {p['mean_batch']:.2f} |")  # fmt: skip
    w = result["workload"]
    rows += ["", f"Batched / unbatched throughput at {result['phases']['batched']['clients']} clients: **{result['speedup']:.2f}x**.",
             (f"Workload: {w['scenes']} scenes x {w['frames_per_scene']} frames per request, strategy {w['strategy']}, MP4 "
              f"upscaled {w['upscale']}x; {result['machine']}.")]  # fmt: skip
    return "\n".join(rows) + "\n"


@dataclass(frozen=True)
class BenchArgs:
    """The serving load benchmark's arguments (``python -m serving.bench --help``)."""

    clients: int = 16
    """Concurrent clients of the load phase."""
    duration: float = 60.0
    """Seconds of the load phase."""
    compare_clients: int = 8
    """Concurrent clients of the batched / unbatched comparison."""
    compare_duration: float = 15.0
    """Seconds per comparison round."""
    rounds: int = 2
    """Alternating batched / unbatched rounds."""
    scenes: int = 4
    """Scenes per request (held-out prompt sets)."""
    frames_per_scene: int = 4
    """Frames per scene of each request."""
    max_batch_size: int = 8
    """Serve's dynamic batching: requests batched together in the load and batched phases."""
    batch_wait_timeout_s: float = ServeConfig.batch_wait_timeout_s
    """Serve's dynamic batching: how long a batch waits to fill."""
    out: str = "results/serve_bench.json"
    """Where the results go: FILE.json and FILE.md (table) beside it."""

    def __post_init__(self) -> None:
        for name in ("clients", "compare_clients", "rounds", "scenes", "frames_per_scene", "max_batch_size"):
            positive_int(self, name)
        for name in ("duration", "compare_duration"):
            number(self, name, 0, strict=True)
        number(self, "batch_wait_timeout_s", 0)


def parse_args(argv: list[str] | None) -> BenchArgs:
    return cli.parse(BenchArgs, argv, prog="python -m serving.bench", description=__doc__)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import ray

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    from ray import serve

    cfg = ServeConfig(port=free_port(), max_batch_size=args.max_batch_size, batch_wait_timeout_s=args.batch_wait_timeout_s)
    url = f"http://127.0.0.1:{cfg.port}/v1/videos"
    bodies = [{"scenes": example_scenes(seed, args.scenes), "frames_per_scene": args.frames_per_scene, "strategy": "far"} for seed in range(64)]
    n_frames = args.scenes * args.frames_per_scene
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    phases, pooled = {}, {"batched": ([], 0.0), "unbatched": ([], 0.0)}
    try:
        deploy(cfg, url, bodies, n_frames)
        phases["load"] = summarize(*run_phase(url, bodies, args.clients, args.duration, n_frames), args.clients, args.duration, cfg.max_batch_size)
        print(f"load: {phases['load']}", flush=True)
        # batched and unbatched alternate, so that a change in background load hits both alike
        for r in range(args.rounds):
            for name, size in (("batched", cfg.max_batch_size), ("unbatched", 1)):
                if r or name == "unbatched":
                    deploy(replace(cfg, max_batch_size=size), url, bodies, n_frames)
                results, wall = run_phase(url, bodies, args.compare_clients, args.compare_duration, n_frames)
                pooled[name] = (pooled[name][0] + results, pooled[name][1] + wall)
                print(f"{name} round {r + 1}: {summarize(results, wall, args.compare_clients, args.compare_duration, size)}", flush=True)
        for name, size in (("batched", cfg.max_batch_size), ("unbatched", 1)):
            phases[name] = summarize(*pooled[name], args.compare_clients, args.compare_duration * args.rounds, size)
    finally:
        serve.shutdown()
        ray.shutdown()
    result = {
        "phases": phases, "speedup": phases["batched"]["throughput_rps"] / phases["unbatched"]["throughput_rps"],
        "workload": {"scenes": args.scenes, "frames_per_scene": args.frames_per_scene, "strategy": "far", "upscale": cfg.upscale},
        "config": asdict(cfg), "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, 1 torch thread per replica",
    }  # fmt: skip
    cli.write_results(args.out, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
