"""Typed, frozen configuration of the serving application and the API-key rule for binding.

One ``ServeConfig`` drives both deployments: where the proxy binds, where the model comes from,
replicas and batching, and the bounds every request is validated against. The same fields are
the ``args`` of ``serve_config.yaml``, the options of ``python -m serving`` and of ``serve run
cluster.serve:build_app key=value ...``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from inflvg.validate import boolean, number, one_of, positive_int

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

API_KEY_HEADER = "X-API-Key"
MIN_API_KEY_CHARS = 16


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    """Address the HTTP proxy binds. Anything but loopback requires an API key (api_key_env)."""
    port: int = 8000
    """Port the HTTP proxy listens on."""
    api_key_env: str = "INFLVG_API_KEY"
    """Environment variable holding the API key, read where the app is built; only its SHA-256
    reaches the replicas, so the key never appears in a config or in the Serve dashboard."""
    generator: str = "storyworld"
    """The generator by name, one of ``inflvg.protocol.BACKENDS`` ('storyworld', 'wan-tiny', 'wan-1.3b')."""
    weights: str | None = None
    """The generator's weights, a local path (a file for 'storyworld', a folder for the Wan presets);
    None: the shipped ones (random weights for the Wan presets)."""
    policy: str | None = None
    """A selection-policy file (policy.pt) for strategy 'learned'."""
    model_uri: str | None = None
    """An MLflow URI of the policy artifact instead of a file: runs:/<run_id>/policy or models:/<name>/<version>."""
    tracking_uri: str | None = None
    """MLflow tracking URI used to resolve model_uri; None: $MLFLOW_TRACKING_URI."""
    allow_pickled_models: bool = False
    """Whether model_uri may load a pickled MLflow pytorch model (``mlflow.pytorch.load_model``) when
    its run holds no ``policy/policy.pt`` artifact. Unpickling runs whatever code the file names, so
    anyone who can write to the tracking server (often unauthenticated) could run code in every
    replica: leave False unless you trust that store. False loads only the weights-only policy file."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Where each generator replica runs its models (cuda needs num_gpus > 0)."""
    num_cpus: float = 1.0
    """CPUs Ray reserves for each generator replica."""
    num_gpus: float = 0.0
    """GPUs Ray reserves for each generator replica (set with device='cuda')."""
    num_replicas: int = 1
    """Generator replicas; with max_replicas above it, the minimum of an autoscaling range."""
    max_replicas: int | None = None
    """None: a fixed num_replicas; above it, Serve autoscales between the two."""
    target_ongoing_requests: float = 8.0
    """Autoscaling target: requests in flight per generator replica."""
    max_batch_size: int = 8
    """Compatible requests generated together in one batch (1 turns batching off)."""
    batch_wait_timeout_s: float = 0.1
    """How long a replica waits for more requests before running a batch that is not full."""
    max_queued_requests: int = 64
    """Requests waiting for a generator replica beyond this are refused with 503 (back-pressure)."""
    torch_threads: int = 1
    """Intra-op threads of each generator replica (more threads fight over busy cores)."""
    max_scenes: int = 16
    """Most scenes a request may ask for (422 beyond)."""
    max_frames_per_scene: int = 8
    """Most frames per scene a request may ask for."""
    max_prompt_chars: int = 240
    """Longest scene prompt accepted, in characters."""
    max_budget_k: int = 64
    """Largest long-term budget K a request may ask for."""
    max_refine_steps: int = 8
    """Most test-time refinement steps a request may ask for."""
    max_body_bytes: int = 65536
    """Request bodies above this are refused with 413 before they are parsed."""
    request_timeout_s: float = 300.0
    """A request still unanswered after this gets 504, and the work no one waits for is stopped."""
    upscale: int = 8
    """Nearest-neighbour upscaling of the output video (32 px frames -> 256 px): browsers need
    even sizes for H.264 and show tiny videos badly."""
    fps: int = 8
    """Frames per second of the output video."""
    progress_interval_s: float = 0.25
    """How often a running batch reports progress to streaming clients."""
    prompts: str | None = None
    """A local EPS .jsonl of prompt sets (InfLVG's format: free text, one row per video) whose rows
    GET /v1/example?row=N serves, so the web page can load them; None: held-out StoryWorld examples.
    Read and checked when the config is made: every row must fit max_scenes and max_prompt_chars."""
    reward_num_cpus: float = 1.0
    """CPUs the reward deployment reserves (one replica holding every reward model, bound to the
    generator where the application is assembled: ``cluster.serve``). It works only when a request
    asks for scores or refinement."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.type == "int":
                positive_int(self, f.name)
            if f.type == "float":
                number(self, f.name)
        self._check_choices()

    def _check_choices(self) -> None:
        if self.port > 65535:
            raise ValueError(f"ServeConfig.port must be in 1..65535, got {self.port}")
        if self.policy and self.model_uri:
            raise ValueError("ServeConfig: give either policy (a file) or model_uri (MLflow), not both")
        one_of(self, "device", ("cpu", "cuda"))
        boolean(self, "allow_pickled_models")
        if self.device == "cuda" and self.num_gpus <= 0:
            raise ValueError("ServeConfig.num_gpus must be > 0 with device='cuda', e.g. 1 (or 0.5 to share a GPU)")
        if self.max_replicas is not None and (isinstance(self.max_replicas, bool) or not isinstance(self.max_replicas, int)
                                              or self.max_replicas < self.num_replicas):  # fmt: skip
            raise ValueError(f"ServeConfig.max_replicas must be None or an integer >= num_replicas ({self.num_replicas}), got {self.max_replicas!r}")
        for name in ("request_timeout_s", "progress_interval_s"):
            number(self, name, 0, strict=True)
        from inflvg.protocol import BACKENDS

        one_of(self, "generator", tuple(BACKENDS))
        if self.prompts is not None:
            self.prompt_sets()
            # replicas read it too, wherever their working directory is
            object.__setattr__(self, "prompts", str(Path(self.prompts).resolve()))

    def prompt_sets(self) -> list:
        """The rows of ``prompts`` (``inflvg.prompts.PromptSet``); ValueError naming the field,
        the file and the row when it is missing, malformed or beyond the request bounds."""
        from inflvg.prompts import load_prompts

        if not isinstance(self.prompts, str) or not self.prompts:
            raise ValueError(f"ServeConfig.prompts must be the path of an EPS .jsonl file, got {self.prompts!r}")
        try:
            rows = load_prompts(self.prompts)
        except (ValueError, OSError) as e:  # missing, unreadable, not UTF-8 JSON rows, bad row
            raise ValueError(f"ServeConfig.prompts: {e}") from None
        for n, ps in enumerate(rows):
            longest = max(len(p) for p in ps.scenes)
            if ps.n_scenes > self.max_scenes:
                raise ValueError(f"ServeConfig.prompts: row {n} of {self.prompts!r} has {ps.n_scenes} scenes, "
                                 f"more than max_scenes ({self.max_scenes}); raise max_scenes or shorten the row")  # fmt: skip
            if longest > self.max_prompt_chars:
                raise ValueError(f"ServeConfig.prompts: row {n} of {self.prompts!r} holds a prompt of {longest} characters, "
                                 f"more than max_prompt_chars ({self.max_prompt_chars}); raise max_prompt_chars")  # fmt: skip
        return rows

    @property
    def has_policy(self) -> bool:
        return bool(self.policy or self.model_uri)

    @property
    def default_strategy(self) -> str:
        """What a request without a strategy gets: the learned policy when one is loaded."""
        return "learned" if self.has_policy else "far"

    @classmethod
    def from_mapping(cls, args: dict) -> ServeConfig:
        """Build from ``serve run`` arguments (all strings) or YAML ``args`` (typed): values are
        converted to the field types; an unknown key or a bad value raises ValueError naming it."""
        from pydantic import TypeAdapter, ValidationError

        unknown = sorted(set(args) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown ServeConfig field(s) {unknown}; known: {', '.join(f.name for f in fields(cls))}")
        try:
            return TypeAdapter(cls).validate_python(dict(args))
        except ValidationError as e:
            raise ValueError("; ".join(_config_error(err) for err in e.errors())) from None


def _config_error(err: ErrorDetails) -> str:
    if err["type"] == "value_error":
        return str(err.get("ctx", {})["error"])
    where = ".".join(str(p) for p in err["loc"])
    return f"ServeConfig.{where}: {err['msg']} (got {err['input']!r})"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_key_hash(cfg: ServeConfig) -> str | None:
    """SHA-256 (hex) of the API key in $<api_key_env>, None when unset; raises on a short key."""
    key = os.environ.get(cfg.api_key_env, "")
    if not key:
        return None
    if len(key) < MIN_API_KEY_CHARS:
        raise ValueError(f"${cfg.api_key_env} must hold at least {MIN_API_KEY_CHARS} characters, e.g. `openssl rand -hex 16`")
    return hashlib.sha256(key.encode()).hexdigest()


def check_bind(cfg: ServeConfig, key_hash: str | None) -> None:
    """Refuse to serve beyond this machine without an API key."""
    if key_hash is None and not is_loopback(cfg.host):
        raise ValueError(
            f"refusing to bind {cfg.host}: an API key is required off loopback; set ${cfg.api_key_env} "
            f"(clients send it in the {API_KEY_HEADER} header), or bind 127.0.0.1"
        )
