"""The generator deployment: a frozen generator backend (``inflvg.protocol``) and the selection
policy in one replica. It generates compatible requests together (``serve.batch``) and streams
each caller progress events, then its result: frames (T, H, W, 3) uint8 and per-scene metadata.

Events (plain dicts, one stream per job):
    {"event": "progress", "stage": "queued" | "refine" | "generate", "done": int, "total": int}
    {"event": "result", "frames": ndarray, "scenes": [...], "timings_ms": {...}, ...}   (last)
    {"event": "error", "status": int, "detail": str, "field": str | None}              (last)
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import torch
from ray import serve

from inflvg.context import make_strategy
from inflvg.generate import GenerationResult, generate
from inflvg.policy import LearnedStrategy, PromptEmbedder, SelectionPolicy, load_policy
from inflvg.protocol import load_backend
from inflvg.refine import Refiner

from .config import ServeConfig
from .jobs import FieldError, Job, check_strategy

log = logging.getLogger("ray.serve")
NO_REWARDS = "scores and refine_steps need the reward models, and none are bound to this server (python -m serving binds them)"


class Unavailable(Exception):
    """The request cannot be served here (503)."""


class DeadlineExceeded(Exception):
    """Everyone waiting for this work has given up (504)."""


class Refused(Exception):
    """The request cannot run as asked (422 naming ``field``): a check the ingress also makes,
    made again where the work runs."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def policy_source(cfg: ServeConfig) -> str | None:
    return cfg.policy or cfg.model_uri


def load_serving_policy(cfg: ServeConfig, d_feature: int, d_prompt: int | None = None) -> SelectionPolicy | None:
    """The policy file, or the policy behind an MLflow URI; None when the config names neither.
    ``d_feature``, ``d_prompt`` (default: ``d_feature``): the backend's widths (``GeneratorSpec``)."""
    policy = _mlflow_policy(cfg) if cfg.model_uri else load_policy(cfg.policy, cfg.device) if cfg.policy else None
    if policy is None:
        return None
    want = (d_feature, d_prompt or d_feature)
    if (policy.cfg.d_feature, policy.cfg.d_prompt) != want:
        raise ValueError(f"policy at {policy_source(cfg)} expects generator width {policy.cfg.d_feature} "
                         f"(prompt width {policy.cfg.d_prompt}), this generator has {want[0]} ({want[1]}): "
                         f"serve it with the generator it was trained for")  # fmt: skip
    return policy.eval().requires_grad_(False)


POLICY_ARTIFACT = "policy/policy.pt"
"""Where a training run logs the policy file (``cluster.tracking.Tracker.log_policy``), beside its MLflow model."""


def _mlflow_policy(cfg: ServeConfig) -> SelectionPolicy:
    """The policy behind ``model_uri``: runs:/<id>/policy, a registered models:/<name>/<version> (or
    @alias) or a logged models:/<model_id>. By default only the weights-only policy file is loaded:
    the URI's own file (runs:/) or the ``policy/policy.pt`` artifact of the run the model came from.
    A pickled MLflow pytorch model is loaded only with ``allow_pickled_models`` (unpickling runs code)."""
    import mlflow
    import mlflow.artifacts

    if cfg.tracking_uri:
        mlflow.set_tracking_uri(cfg.tracking_uri)  # models:/ URIs resolve through the global store
    uri = str(cfg.model_uri)
    run_id = _source_run(uri)
    direct = [] if uri.startswith("models:/") else [uri]  # runs:/<id>/policy, or any artifact URI of the file itself
    for candidate in direct + ([f"runs:/{run_id}/{POLICY_ARTIFACT}"] if run_id else []):
        local = _download(candidate)
        if local is not None and (local.is_file() or (local / "policy.pt").is_file()):
            return load_policy(local if local.is_file() else local / "policy.pt", cfg.device)  # weights_only=True
    if not cfg.allow_pickled_models:
        raise ValueError(
            f"model_uri {uri!r}: {f'its run {run_id}' if run_id else 'it comes from no run and'} holds no {POLICY_ARTIFACT} "
            f"artifact (the weights-only policy file a training run logs beside its model), and loading the MLflow model would "
            f"unpickle it, which runs whatever code it holds; log the policy file with the model (cluster.tracking does), or set "
            f"ServeConfig.allow_pickled_models=True if you trust everyone who can write to this tracking server"
        )
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    if not (local / "MLmodel").is_file():
        raise ValueError(f"model_uri {uri!r} holds neither policy.pt nor an MLflow model")
    import mlflow.pytorch as mlflow_pytorch

    policy = mlflow_pytorch.load_model(str(local), map_location=cfg.device)  # unpickles: allowed by the config
    if not isinstance(policy, SelectionPolicy):
        raise ValueError(f"model_uri {uri!r} is a {type(policy).__name__}, not a SelectionPolicy")
    return policy


def _source_run(uri: str) -> str | None:
    """The run an MLflow URI's model came from: runs:/<id>/..., models:/<name>/<version|latest|stage>,
    models:/<name>@<alias>, models:/<logged model id>; None for another artifact URI, or when the registry names no run."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("runs:/"):
        return uri[len("runs:/") :].strip("/").split("/", 1)[0] or None
    if not uri.startswith("models:/"):
        return None
    rest, client = uri[len("models:/") :].strip("/"), MlflowClient()
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return client.get_model_version_by_alias(name, alias).run_id or None
    if "/" in rest:
        name, version = rest.split("/", 1)
        if version.isdigit():
            return client.get_model_version(name, version).run_id or None
        found = client.get_latest_versions(name, None if version.lower() == "latest" else [version])
        return (max(found, key=lambda v: int(v.version)).run_id or None) if found else None
    return client.get_logged_model(rest).source_run_id or None


def _download(uri: str) -> Path | None:
    """The local copy of an artifact, None when the store has none at ``uri``."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except (MlflowException, OSError):
        return None


class Progress:
    """Frames done so far, written by the worker thread and read by the event loop. Stops the
    work (at the next frame) once everyone waiting for it has passed their deadline."""

    def __init__(self, deadline: float, total: int):
        self.deadline, self.stage, self.done, self.total = deadline, "generate", 0, total

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if time.time() > self.deadline:
            raise DeadlineExceeded

    def event(self) -> dict:
        return {"event": "progress", "stage": self.stage, "done": self.done, "total": self.total}


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def scene_infos(job: Job, b: int, res: GenerationResult, fps: int, scores: list[dict] | None, unknown: list[int]) -> list[dict]:
    """Per-scene metadata of video ``b`` of a batch; ``unknown``: per scene, the prompt's words
    the backend's tokenizer does not know."""
    out = []
    for sc, prompt in enumerate(job.prompt_set.scenes):
        frames = slice(sc * fps, (sc + 1) * fps)
        out.append({
            "index": sc, "prompt": prompt, "first_frame": sc * fps, "n_frames": fps,
            "selected_tokens": int((res.selections[sc][b] >= 0).sum()) if res.selections else None,
            "context_tokens": int(res.context_tokens[frames].max()), "ms_per_frame": float(res.ms_per_frame[frames].mean()),
            "unknown_words": unknown[sc], "scores": None if scores is None else {k: _finite(v) for k, v in scores[sc].items()},
        })  # fmt: skip
    return out


def error_event(status: int, detail: str, field: str | None = None) -> dict:
    return {"event": "error", "status": status, "detail": detail, "field": field}


class RemoteScorer:
    """The reward deployment behind a Serve handle, as ``inflvg.refine.SceneScorer``: called from
    the replica's worker thread (never its event loop), so it may wait for the answer."""

    def __init__(self, handle):
        self.handle = handle

    def scene_rewards(self, videos: np.ndarray, ps, frames_per_scene: int) -> tuple[np.ndarray, dict]:
        return self.handle.scene_rewards.remote(videos, ps, frames_per_scene).result()


class JobStream(Protocol):
    """What ``serve.batch`` makes of an async-generator method (``generate_batch``), as a replica
    sees it: called with one job, it streams that job's share of each yielded batch; its batching
    is set per replica. (ray's overloads of ``serve.batch`` describe only coroutine methods.)"""

    def __call__(self, job: Job, /) -> AsyncIterator[dict]: ...
    def set_max_batch_size(self, new_max_batch_size: int) -> None: ...
    def set_batch_wait_timeout_s(self, new_batch_wait_timeout_s: float) -> None: ...


class JobStreamMethod(Protocol):
    def __get__(self, replica: object, owner: type | None = None, /) -> JobStream: ...


def batch_stream(max_batch_size: int, batch_wait_timeout_s: float) -> Callable[[Callable[..., AsyncIterator[list]]], JobStreamMethod]:
    """``serve.batch(...)`` for a method that yields one list of per-job events per step, typed as it behaves."""
    return cast("Callable[[Callable[..., AsyncIterator[list]]], JobStreamMethod]",
                serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s))  # fmt: skip


class VideoGenerator:
    """One generator replica: the backend, the policy, a worker thread that generates batches,
    and the refiner, which reaches the reward models through ``rewards``, a handle to the reward
    deployment bound where the application is assembled (None: no scores, no refinement)."""

    def __init__(self, cfg: ServeConfig, rewards=None):
        torch.set_num_threads(cfg.torch_threads)
        self.cfg = cfg
        self.gen = load_backend(cfg.generator, cfg.weights, cfg.device)
        self.spec = self.gen.spec
        self.policy = load_serving_policy(cfg, self.spec.d_feature, self.spec.d_prompt)
        self.embed = PromptEmbedder(self.gen)
        self.refiner = None if rewards is None else Refiner(self.gen, RemoteScorer(rewards))
        # one worker thread: batches run one after another, and the event loop stays free to
        # collect the next batch and answer health checks meanwhile
        self.executor = ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(cfg.torch_threads,))
        self.worker_free = asyncio.Event()
        self.worker_free.set()
        self.generate_batch.set_max_batch_size(cfg.max_batch_size)
        self.generate_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

    def info(self) -> dict:
        spec = self.spec
        gen = {
            "name": spec.backend, "weights": self.cfg.weights or "shipped", "parameters": spec.parameters,
            "frame_shape": list(spec.frame_shape), "frames_per_scene": spec.frames_per_scene, "frames_per_block": spec.frames_per_block,
            "budget_k": spec.context.budget_k, "window_frames": spec.context.window_frames, "device": self.cfg.device,
        }  # fmt: skip
        return {"generator": gen, "policy": policy_source(self.cfg) if self.policy is not None else None}

    def refiner_problem(self) -> str | None:
        """Why scores and refinement are unavailable here, or None."""
        return None if self.refiner is not None else NO_REWARDS

    async def run(self, job: Job):
        """The deployment's entry point: this job's event stream.

        A job joins the batch queue only while the worker is free. ``serve.batch`` forms the
        next batch as soon as one request waits, and closes it after ``batch_wait_timeout_s``,
        long before a running batch ends; held back here, everything that arrived meanwhile
        enters together and fills the next batch."""
        yield self._queued(job)
        await self.worker_free.wait()
        async for event in self.generate_batch(job):
            yield event

    # the config's defaults; __init__ sets this replica's own values
    @batch_stream(max_batch_size=ServeConfig.max_batch_size, batch_wait_timeout_s=ServeConfig.batch_wait_timeout_s)
    async def generate_batch(self, jobs: list[Job]) -> AsyncIterator[list]:
        """Each yield holds one event per job; a job whose stream has ended gets StopIteration.
        Compatible jobs (``Job.batch_key``) share one ``generate`` call; groups run in turn."""
        self.worker_free.clear()
        try:
            latest: list = [self._queued(j) for j in jobs]
            groups: dict[tuple, list[int]] = {}
            for i, job in enumerate(jobs):
                groups.setdefault(job.batch_key(), []).append(i)
            for idx in groups.values():
                async for events in self._run_group([jobs[i] for i in idx]):
                    for i, event in zip(idx, events, strict=True):
                        latest[i] = event
                    yield list(latest)
                    latest = [StopIteration if isinstance(e, dict) and e["event"] != "progress" else e for e in latest]
        finally:
            self.worker_free.set()

    def _queued(self, job: Job) -> dict:
        total = job.prompt_set.n_scenes * (job.frames_per_scene or self.spec.frames_per_scene)
        return {"event": "progress", "stage": "queued", "done": 0, "total": total}

    async def _run_group(self, jobs: list[Job]):
        """Yield [progress event] * len(jobs) while the batch runs, then its final events."""
        progress = Progress(max(j.deadline for j in jobs), self._queued(jobs[0])["total"])
        work = asyncio.get_running_loop().run_in_executor(self.executor, self._work, jobs, progress)
        reported = None
        while not (await asyncio.wait([work], timeout=self.cfg.progress_interval_s))[0]:
            if progress.event() != reported:
                reported = progress.event()
                yield [reported] * len(jobs)
        yield await work

    def _work(self, jobs: list[Job], progress: Progress) -> list[dict]:
        """Runs in the worker thread; every failure becomes an error event for the group."""
        try:
            if time.time() > progress.deadline:
                raise DeadlineExceeded
            return self._make_videos(jobs, progress)
        except DeadlineExceeded:
            return [error_event(504, f"no answer within request_timeout_s ({self.cfg.request_timeout_s:g} s)")] * len(jobs)
        except Unavailable as e:
            return [error_event(503, str(e))] * len(jobs)
        except Refused as e:
            return [error_event(422, str(e), e.field)] * len(jobs)
        except Exception as e:
            log.exception("generation failed")
            return [error_event(500, f"generation failed: {type(e).__name__}: {e}")] * len(jobs)

    def _make_videos(self, jobs: list[Job], progress: Progress) -> list[dict]:
        job, start, spec = jobs[0], time.time(), self.spec
        fps = job.frames_per_scene or spec.frames_per_scene
        ctx = replace(spec.context, budget_k=job.budget_k or spec.context.budget_k)
        prompt_sets = [j.prompt_set for j in jobs]
        if fps % spec.frames_per_block:
            raise Refused("frames_per_scene", f"must be a multiple of the generator's frames_per_block ({spec.frames_per_block}), got {fps}")
        try:  # the ingress checked already; checked again where the work runs, never a crash
            for j in jobs:
                check_strategy(j.strategy, j.prompt_set)
        except FieldError as e:
            raise Refused(e.field, e.message) from None
        if job.strategy != "learned":
            strategy = make_strategy(job.strategy)
        policy, refine = self.policy, None
        if job.refine_steps:
            progress.stage, progress.total = "refine", job.refine_steps
            refined = self._refiner().refine(self.policy, job.prompt_set, job.refine_steps, job.seed, frames_per_scene=fps, ctx=ctx)
            policy = refined.policy.eval()
            refine = {"steps": job.refine_steps, "rewards": [_finite(r) for r in refined.curve]}
            progress.stage = "generate"
        if job.strategy == "learned":
            if policy is None:
                raise Unavailable("no policy is loaded on this replica")
            strategy = LearnedStrategy(policy, self.embed, greedy=True, record=False)
        generated = time.time()
        res = generate(self.gen, prompt_sets, strategy, seed=job.seed, frames_per_scene=fps, ctx=ctx, progress=progress, shared_noise=True)
        timings = {"refine": (generated - start) * 1000, "generate": (time.time() - generated) * 1000}
        out = []
        for b, j in enumerate(jobs):
            scored = time.time()
            scores = self._refiner().score(res.frames[b], j.prompt_set, fps) if j.scores else None
            unknown = [len(self.gen.tokenizer.unknown_words(p)) for p in j.prompt_set.scenes]
            out.append({
                "event": "result", "frames": np.ascontiguousarray(res.frames[b]), "strategy": j.strategy, "frames_per_scene": fps,
                "budget_k": ctx.budget_k, "seed": j.seed, "batch_size": len(jobs), "refine": refine, "unknown_words": sum(unknown),
                "timings_ms": {"queue": (start - j.submitted) * 1000, **timings, "score": (time.time() - scored) * 1000},
                "scenes": scene_infos(j, b, res, fps, scores, unknown),
            })  # fmt: skip
        return out

    def _refiner(self) -> Refiner:
        if self.refiner is None:
            raise Unavailable(NO_REWARDS)
        return self.refiner
