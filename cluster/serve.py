"""The Serve application assembled (serving's deployments with the reward models bound to them)
and served over HTTP until interrupted:

    python -m serving --host 127.0.0.1 --port 8000 [--policy PATH | --model-uri URI] [--prompts FILE.jsonl] [--max-batch-size 8 ...]
    serve run cluster.serve:build_app policy=runs/storyworld/policy.pt

Joins the Ray cluster at $RAY_ADDRESS when it is set, else starts a local Ray on 127.0.0.1
(never a cluster merely found on the machine); starts Serve's proxy on --host/--port and
deploys the app. Every option is a ServeConfig field. Binding anything but loopback requires
an API key in $INFLVG_API_KEY. --prompts FILE: an EPS .jsonl of free-text prompt sets whose rows
the web page can load (GET /v1/example?row=N).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from inflvg import cli
from reward_actors.config import RewardConfig
from serving.config import ServeConfig, api_key_hash, check_bind

from .local_ray import secure_ray_env

if TYPE_CHECKING:
    from ray.serve import Application


def check_files(cfg: ServeConfig) -> None:
    """Fail before starting anything when a named local file is missing, or the prompt file is
    not a readable EPS .jsonl within the request bounds."""
    for name in ("weights", "policy", "prompts"):
        path = getattr(cfg, name)
        if path is not None and not Path(path).is_file():
            raise ValueError(f"--{name} {path!r} is not a file")
    if cfg.prompts is not None:
        try:
            cfg.prompt_sets()
        except ValueError as e:
            raise ValueError(f"--prompts: {str(e).removeprefix('ServeConfig.prompts: ')}") from None


def compose(cfg: ServeConfig, key_hash: str | None) -> Application:
    """The whole application: serving's ingress and generator, and one reward deployment bound
    to the generator (every reward model loaded once per server)."""
    from ray import serve

    from reward_actors.videos import VideoScorer
    from serving.app import compose as compose_serving

    rewards = serve.deployment(VideoScorer, name="Rewards").options(
        num_replicas=1, ray_actor_options={"num_cpus": cfg.reward_num_cpus}, max_ongoing_requests=4 * cfg.max_batch_size
    )  # fmt: skip
    return compose_serving(cfg, key_hash, rewards.bind(RewardConfig()))


def build_app(args: dict) -> Application:
    """Application builder for ``serve run`` / ``serve deploy``: ``args`` are ServeConfig fields.
    Raises when the config binds beyond loopback and no API key is set."""
    cfg = ServeConfig.from_mapping(args)
    key_hash = api_key_hash(cfg)
    check_bind(cfg, key_hash)
    return compose(cfg, key_hash)


def serve_forever(cfg: ServeConfig, key_hash: str | None) -> None:
    secure_ray_env()  # before Ray is imported: it reads its network mode then
    import ray
    from ray import serve

    from serving.app import APP_NAME

    # replicas inherit this when Ray starts here: one intra-op thread unless configured
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.torch_threads))
    ray.init(address="local", include_dashboard=False)  # $RAY_ADDRESS overrides "local"
    try:
        serve.start(http_options={"host": cfg.host, "port": cfg.port})
        serve.run(compose(cfg, key_hash), name=APP_NAME, route_prefix="/")
        print(f"serving on http://{cfg.host}:{cfg.port}/ (API at /docs); Ctrl-C stops", flush=True)
        # explicit: a process started in the background by a shell inherits SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete(APP_NAME)
        ray.shutdown()


def main(argv: list[str] | None = None) -> None:
    prog = "python -m serving"
    cfg = cli.parse(ServeConfig, argv, prog=prog, description=__doc__)
    with cli.usage_errors(prog):
        key_hash = api_key_hash(cfg)
        check_bind(cfg, key_hash)
        check_files(cfg)
    serve_forever(cfg, key_hash)


if __name__ == "__main__":
    main()
