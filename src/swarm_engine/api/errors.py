"""Errors as HTTP answers: one JSON shape (`{"error": code, "message": one line}`), the
status chosen from the `SwarmError` tree the service raised.

| error | status | code |
|---|---|---|
| request body or parameter of the wrong shape (a reference `echo@`: `api/refs.py`) | 422 | `invalid_request` |
| `UsageError` (a value that can never work) | 400 | `bad_request` |
| no or wrong bearer token | 401 | `unauthorized` |
| another site's `Origin`; a tokenless server's non-loopback `Host` (`api/sites.py`) | 403 | `forbidden` |
| `NotFoundError`, unknown path | 404 | `not_found` |
| `ConflictError` (the ticket's state forbids it) | 409 | `conflict` |
| body over the size limit | 413 | `payload_too_large` |
| `ConfigError` (invalid agent or workflow) | 422 | `invalid_definition` |
| `StoreIntegrityError` (the database refused a value) | 422 | `refused_by_store` |
| `StoreError` (busy, unreachable) | 503 | `store_unavailable` (with `Retry-After`) |
| as many live log streams as the server serves (`api/logs.py`) | 503 | `too_many_streams` |
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from swarm_engine.api.methods import allowed_methods
from swarm_engine.api.models import ErrorBody
from swarm_engine.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    StoreError,
    StoreIntegrityError,
    SwarmError,
    UsageError,
)

log = logging.getLogger(__name__)

STATUS_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
                422: "invalid_request", 503: "store_unavailable"}  # fmt: skip
RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": code.replace("_", " "), "model": ErrorBody}
    for status, code in STATUS_CODES.items()
}
"""The error answers an operation may give, for the OpenAPI schema."""


def body(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    headers = extra.pop("headers", None)
    content = {"error": code, "message": " ".join(message.split())}
    content.update(extra)
    return JSONResponse(content, status_code=status, headers=headers)


def status_of(exc: SwarmError) -> tuple[int, str]:
    """The HTTP status and error code for a `SwarmError`."""
    if isinstance(exc, UsageError):
        return 400, "bad_request"
    if isinstance(exc, NotFoundError):
        return 404, "not_found"
    if isinstance(exc, ConflictError):
        return 409, "conflict"
    if isinstance(exc, ConfigError):
        return 422, "invalid_definition"
    if isinstance(exc, StoreIntegrityError):
        return 422, "refused_by_store"
    if isinstance(exc, StoreError):
        return 503, "store_unavailable"
    return 500, "internal"


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""

    @app.exception_handler(SwarmError)
    async def swarm_error(request: Request, exc: SwarmError) -> JSONResponse:
        status, code = status_of(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc)
        headers = {"Retry-After": "1"} if status == 503 else None
        return body(status, code, str(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(first["loc"])
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return body(422, "invalid_request", f"{where}: {first['msg']}{more}", details=errors)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "bad_request")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not the first route's only
            headers["Allow"] = ", ".join(allowed_methods(request.scope))
        return body(exc.status_code, code, str(exc.detail), headers=headers or None)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return body(500, "internal", f"the server failed: {type(exc).__name__}")


class OneFraming:
    """ASGI middleware: a request that gives both `Content-Length` and `Transfer-Encoding`
    is answered 400 (`bad_request`) and its connection closed, unread. h11 reads such a
    body by its chunks and goes on with what follows on the connection; a proxy in front
    that went by the length would send the rest as a request of its own (request
    smuggling: RFC 9112, section 6.3, says to treat such a message as an error)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = {name.lower() for name, _ in scope.get("headers") or ()}
            if b"content-length" in names and b"transfer-encoding" in names:
                message = (
                    "the request gives both Content-Length and Transfer-Encoding; send one"
                    " (RFC 9112, section 6.3)"
                )
                headers = {"Connection": "close"}  # (what follows it is never read)
                await body(400, "bad_request", message, headers=headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 with the JSON
    error body: at once when its Content-Length says so, else as soon as that many bytes
    have come (the handler reading it gets an HTTP 413 error)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the request body is over {self.limit // 1024} KiB (the limit)"
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await body(413, "payload_too_large", message)(scope, receive, send)
            return
        total = 0

        async def limited() -> Message:
            nonlocal total
            got = await receive()
            if got["type"] == "http.request":
                total += len(got.get("body", b""))
                if total > self.limit:
                    raise HTTPException(status_code=413, detail=message)
            return got

        await self.app(scope, limited, send)
