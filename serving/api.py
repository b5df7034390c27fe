"""The FastAPI app of the ingress: validates requests, hands jobs to the generator deployment,
encodes the frames it returns and answers JSON (or NDJSON progress, then the result).

    GET  /             the web page
    GET  /healthz      200 once the generator has loaded its model
    GET  /v1/models    generator, policy, strategies, limits
    GET  /v1/example   prompts of a held-out StoryWorld story, or a row of the server's prompt file
    POST /v1/videos    free-text scene prompts + options -> the video with per-scene metadata
"""

import asyncio
import base64
import time
from pathlib import Path

from fastapi import Depends, FastAPI, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from ray.serve.exceptions import BackPressureError

from inflvg.context import STRATEGIES
from inflvg.video import encode

from .config import ServeConfig
from .generator import error_event
from .http import BodyLimit, api_key_check, error_response, field_error, ndjson, validation_error
from .jobs import FieldError, Job, make_job
from .schema import FORMATS, MAX_SEED, Capability, ErrorResponse, ExampleResponse, ModelsResponse, VideoResponse, example_scenes, request_model

PAGE = Path(__file__).with_name("static") / "index.html"
NDJSON = "application/x-ndjson"
ORACLE_NOTE = "reads StoryWorld's ground truth: prompts in StoryWorld's grammar only (free text gets 422)"


class Backend:
    """The ingress's view of the generator deployment: cached facts and one event stream per job."""

    def __init__(self, cfg: ServeConfig, handle):
        self.cfg, self.handle = cfg, handle
        self.info: dict | None = None
        self.refiner_asked, self.refiner_error = False, None

    async def generator_info(self) -> dict:
        info = self.info
        if info is None:
            info = self.info = await self.handle.info.remote()
        return info

    async def refiner_problem(self) -> str | None:
        """Why scores and refinement are unavailable (no reward models bound), or None."""
        if not self.refiner_asked:
            self.refiner_error = await self.handle.refiner_problem.remote()
            self.refiner_asked = True
        return self.refiner_error

    async def events(self, job: Job):
        """The job's events, ending with an error event on timeout or a full queue."""
        stream = self.handle.options(stream=True).run.remote(job)
        while True:
            try:
                event = await asyncio.wait_for(anext(stream), max(job.deadline - time.time(), 0.0))
            except TimeoutError:
                stream.cancel()
                event = error_event(504, f"no answer within request_timeout_s ({self.cfg.request_timeout_s:g} s)")
            except BackPressureError:
                event = error_event(503, "the generator queue is full (max_queued_requests); retry later")
            except StopAsyncIteration:
                event = error_event(500, "the generator ended the stream without a result")
            except Exception as e:  # noqa: BLE001 -- the replica died or could not be reached (ray raises many types): the stream must end with an error event
                event = error_event(503, f"generator unavailable: {type(e).__name__}: {e}")
            yield event
            if event["event"] != "progress":
                return

    async def render(self, result: dict, job: Job, fmt: str) -> dict:
        """A result event -> the JSON body of VideoResponse (the video encoded off the event loop)."""
        frames, start = result["frames"], time.time()
        video = await asyncio.to_thread(encode, frames, fmt, self.cfg.upscale, self.cfg.fps)
        timings = {**result["timings_ms"], "encode": (time.time() - start) * 1000, "total": (time.time() - job.submitted) * 1000}
        return {
            "id": job.request_id, "format": fmt, "media_type": FORMATS[fmt], "video": base64.b64encode(video).decode(),
            "width": frames.shape[2] * self.cfg.upscale, "height": frames.shape[1] * self.cfg.upscale, "fps": self.cfg.fps,
            "n_frames": len(frames), "timings_ms": timings,
            **{k: result[k] for k in ("strategy", "frames_per_scene", "budget_k", "seed", "batch_size", "unknown_words", "scenes", "refine")},
        }  # fmt: skip


def resolve_strategy(req, cfg: ServeConfig) -> str:
    """The request's strategy, or the default; refinement always refines the learned policy."""
    strategy = req.strategy or ("learned" if req.refine_steps else cfg.default_strategy)
    if req.refine_steps and strategy != "learned":
        raise FieldError("refine_steps", f"test-time refinement refines the learned policy: use strategy 'learned', not {strategy!r}")
    if strategy == "learned" and not cfg.has_policy and not req.refine_steps:
        raise FieldError("strategy", f"no policy is loaded on this server (start it with --policy PATH or --model-uri URI); "
                                     f"choose one of {', '.join(STRATEGIES)}, or refine_steps > 0 to refine a fresh policy", 409)  # fmt: skip
    return strategy


ERRORS = {code: {"model": ErrorResponse, "description": what} for code, what in [
    (400, "The body is not UTF-8 text."),
    (401, "Missing or wrong API key."),
    (409, "Strategy 'learned' without a loaded policy."),
    (413, "Body too large."),
    (422, "Invalid request (a prompt with a control character, 'oracle' on free text, ...): the message names the field."),
    (503, "Generator busy or unreachable."),
    (504, "No answer within request_timeout_s."),
]}  # fmt: skip


def create_api(cfg: ServeConfig, handle, key_hash: str | None) -> FastAPI:
    backend = Backend(cfg, handle)
    rows = cfg.prompt_sets() if cfg.prompts else None  # checked when the config was made
    app = FastAPI(title="InfLVG video generation", version="1.0", description=__doc__ or "")
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.exception_handler(RequestValidationError)(validation_error)
    app.exception_handler(FieldError)(field_error)
    auth = [Depends(api_key_check(key_hash))] if key_hash else []
    add_info_routes(app, cfg, backend, rows, auth)
    add_example_route(app, cfg, rows)
    add_video_route(app, cfg, backend, auth)
    return app


def add_info_routes(app: FastAPI, cfg: ServeConfig, backend: Backend, rows: list | None, auth: list) -> None:
    """GET /, /healthz and /v1/models."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return PAGE.read_text()

    @app.get("/healthz", response_model=dict[str, str], responses={503: ERRORS[503]})
    async def healthz() -> dict[str, str] | JSONResponse:
        try:
            await asyncio.wait_for(backend.generator_info(), 10)
        except Exception as e:  # noqa: BLE001 -- a health check reports any failure to reach the generator as 503
            return error_response(503, f"generator not ready: {type(e).__name__}: {e}")
        return {"status": "ok"}

    @app.get("/v1/models", dependencies=auth, responses={401: ERRORS[401]})
    async def models() -> ModelsResponse:
        info, problem = await backend.generator_info(), await backend.refiner_problem()
        return ModelsResponse(
            generator=info["generator"], policy=info["policy"], default_strategy=cfg.default_strategy, formats=list(FORMATS),
            strategies=[Capability(name="learned", available=cfg.has_policy, reason=None if cfg.has_policy else "no policy loaded")]
            + [Capability(name=name, available=True, reason=ORACLE_NOTE if cls.needs_ground_truth else None) for name, cls in STRATEGIES.items()],
            limits={k: getattr(cfg, k) for k in ("max_scenes", "max_frames_per_scene", "max_prompt_chars", "max_budget_k",
                                                 "max_refine_steps", "max_body_bytes", "request_timeout_s")},
            refiner=Capability(name="rewards", available=problem is None, reason=problem),
            prompt_rows=None if rows is None else len(rows),
        )  # fmt: skip


def add_example_route(app: FastAPI, cfg: ServeConfig, rows: list | None) -> None:
    """GET /v1/example."""
    row_help = (f"A row of the server's prompt file ({len(rows)} rows, from 0); default: seed modulo the row count." if rows
                else "A row of the server's prompt file; this server has none (start it with --prompts FILE).")  # fmt: skip

    @app.get("/v1/example", responses={422: ERRORS[422]})
    async def example(seed: int = Query(0, ge=0, le=MAX_SEED, description="Which example: a held-out StoryWorld story's seed."),
                      scenes: int = Query(min(4, cfg.max_scenes), ge=1, le=cfg.max_scenes, description="Scenes of a StoryWorld example."),
                      row: int | None = Query(None, ge=0, le=len(rows) - 1 if rows else None, description=row_help)) -> ExampleResponse:  # fmt: skip
        """Example prompts: a row of the server's prompt file when it has one, else a held-out StoryWorld story."""
        if rows is None:
            if row is not None:
                raise FieldError("row", "this server has no prompt file (start it with --prompts FILE); leave row out for a StoryWorld example")
            return ExampleResponse(id=f"storyworld-heldout-{seed}", scenes=example_scenes(seed, scenes), rows=None)
        ps = rows[seed % len(rows) if row is None else row]
        return ExampleResponse(id=ps.id, scenes=list(ps.scenes), rows=len(rows))


async def check_request(body, cfg: ServeConfig, backend: Backend) -> Job:
    """The job of a validated POST /v1/videos body, after the checks that need the config or the generator."""
    job = make_job(body, resolve_strategy(body, cfg), cfg.request_timeout_s)  # refuses 'oracle' on free text
    if (body.scores or body.refine_steps) and (problem := await backend.refiner_problem()):
        raise FieldError("scores" if body.scores else "refine_steps", problem)
    if body.frames_per_scene is not None:
        block = (await backend.generator_info())["generator"].get("frames_per_block", 1)
        if body.frames_per_scene % block:
            raise FieldError("frames_per_scene", f"must be a multiple of the generator's frames_per_block ({block}), got {body.frames_per_scene}")
    return job


def add_video_route(app: FastAPI, cfg: ServeConfig, backend: Backend, auth: list) -> None:
    """POST /v1/videos."""
    VideoRequest = request_model(cfg)

    @app.post("/v1/videos", dependencies=auth, response_model=VideoResponse,
              responses={200: {"content": {NDJSON: {"schema": {"type": "string"}}}}, **ERRORS})  # fmt: skip
    # the model is built per config, so it is a variable; FastAPI reads the annotation at runtime
    async def create_video(body: VideoRequest):  # pyright: ignore[reportInvalidTypeForm]
        job = await check_request(body, cfg, backend)
        if body.stream:
            return StreamingResponse(stream(job, body.format), media_type=NDJSON)
        async for event in backend.events(job):
            if event["event"] == "error":
                field = event.get("field")
                problems = [{"field": field, "message": event["detail"].removeprefix(f"{field}: ")}] if field else None
                return error_response(event["status"], event["detail"], problems)
            if event["event"] == "result":
                return JSONResponse(await backend.render(event, job, body.format))
        return None  # not reached: the events end with an error or a result

    async def stream(job: Job, fmt: str):
        async for event in backend.events(job):
            yield ndjson({"event": "result", **await backend.render(event, job, fmt)} if event["event"] == "result" else event)
