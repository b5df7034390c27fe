"""The Serve application: a FastAPI ingress deployment in front of the generator deployment.

    serve run serving.app:build_app policy=runs/storyworld/policy.pt     # import path + args
    serve run serving/serve_config.yaml                                   # or: serve deploy ...
    python -m serving --host 127.0.0.1 --port 8000                        # starts Ray too
"""

from __future__ import annotations

from ray import serve
from ray.serve import Application

from .api import create_api
from .config import ServeConfig, api_key_hash, check_bind
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


def compose(cfg: ServeConfig, key_hash: str | None) -> Application:
    generator = serve.deployment(VideoGenerator).options(**generator_options(cfg)).bind(cfg)
    ingress = serve.deployment(Api).options(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
    return ingress.bind(generator, cfg, key_hash)


def build_app(args: dict) -> Application:
    """Application builder for ``serve run`` / ``serve deploy``: ``args`` are ServeConfig fields.
    Raises when the config binds beyond loopback and no API key is set."""
    cfg = ServeConfig.from_mapping(args)
    key_hash = api_key_hash(cfg)
    check_bind(cfg, key_hash)
    return compose(cfg, key_hash)
