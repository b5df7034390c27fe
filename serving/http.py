"""HTTP plumbing of the ingress: the body-size limit, the API key, and error bodies that name
the field at fault. Every refusal is JSON shaped like ``schema.ErrorResponse``."""

import hashlib
import hmac
import json

from fastapi import HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader

from .config import API_KEY_HEADER
from .jobs import FieldError


def error_response(status: int, detail: str, problems: list[dict] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "errors": problems or []}, status_code=status)


class BodyLimit:
    """ASGI middleware: a body above ``max_bytes`` gets 413 before routing or parsing. The
    declared Content-Length is checked first; a body without one is counted as it arrives."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        detail = f"request body larger than {self.max_bytes} bytes (max_body_bytes)"
        await error_response(413, detail, [{"field": "body", "message": detail}])(scope, receive, send)


def field_name(loc: tuple) -> str:
    """Pydantic location -> the field as a client writes it: ('body', 'scenes', 0) -> 'scenes[0]'."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query") else list(loc)
    name = str(parts[0]) if parts else "body"
    for p in parts[1:]:
        name += f"[{p}]" if isinstance(p, int) else f'["{p}"]' if name == "row" else f".{p}"
    return name


def _problem(err: dict) -> dict:
    if err["type"] == "json_invalid":
        return {"field": "body", "message": f"invalid JSON at character {err['loc'][-1]}: {err.get('ctx', {}).get('error', '')}"}
    message = err["msg"].removeprefix("Value error, ")
    return {"field": field_name(tuple(err["loc"])), "message": message}


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [_problem(e) for e in exc.errors()]
    return error_response(422, "; ".join(f"{p['field']}: {p['message']}" for p in problems), problems)


async def field_error(request: Request, exc: FieldError) -> JSONResponse:
    return error_response(exc.status, str(exc), [{"field": exc.field, "message": exc.message}])


def api_key_check(key_hash: str):
    """A FastAPI dependency accepting only requests whose X-API-Key hashes to ``key_hash``."""
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="The key in $INFLVG_API_KEY (or the configured api_key_env).")

    async def check(key: str | None = Security(header)) -> None:
        given = hashlib.sha256((key or "").encode()).hexdigest()
        if not key or not hmac.compare_digest(given, key_hash):
            raise HTTPException(401, detail=f"missing or wrong API key: send it in the {API_KEY_HEADER} header",
                                headers={"WWW-Authenticate": "ApiKey"})  # fmt: skip

    return check


def ndjson(event: dict) -> bytes:
    return (json.dumps(event) + "\n").encode()
