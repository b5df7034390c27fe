"""The Serve application's deployments: a FastAPI ingress in front of the generator deployment.
The generator reaches the reward models through a handle it is given (``rewards``); the
application with its reward deployment is assembled in ``cluster.serve``:

    serve run cluster.serve:build_app policy=runs/storyworld/policy.pt   # import path + args
    serve run serving/serve_config.yaml                                   # or: serve deploy ...
    python -m serving --host 127.0.0.1 --port 8000                        # starts Ray too
"""

from __future__ import annotations

from ray import serve
from ray.serve import Application

from .api import create_api
from .config import ServeConfig
from .generator import VideoGenerator

APP_NAME = "inflvg"


@serve.ingress()
class Api:
    """The HTTP ingress; cheap (validation, encoding), so one replica serves many generators."""

    def __init__(self, generator, cfg: ServeConfig, key_hash: str | None):
        self.api = create_api(cfg, generator, key_hash)

    def __serve_build_asgi_app__(self):
        return self.api


def generator_options(cfg: ServeConfig) -> dict:
    """Replicas, resources and queue bounds of the generator deployment."""
    opts = {
        "ray_actor_options": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
        # room for the batch being generated and the next one filling up
        "max_ongoing_requests": 2 * cfg.max_batch_size,
        "max_queued_requests": cfg.max_queued_requests,
    }
    if cfg.max_replicas is not None:
        opts["autoscaling_config"] = {"min_replicas": cfg.num_replicas, "max_replicas": cfg.max_replicas,
                                      "target_ongoing_requests": cfg.target_ongoing_requests}  # fmt: skip
    else:
        opts["num_replicas"] = cfg.num_replicas
    return opts


def compose(cfg: ServeConfig, key_hash: str | None, rewards=None) -> Application:
    """The ingress over the generator deployment; ``rewards``: the bound reward deployment, or
    None for a server without scores and refinement."""
    generator = serve.deployment(VideoGenerator).options(**generator_options(cfg)).bind(cfg, rewards)
    ingress = serve.deployment(Api).options(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
    return ingress.bind(generator, cfg, key_hash)
