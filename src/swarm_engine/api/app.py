"""The HTTP API application: `create_app(settings, token)` (docs/api.md).

Every route but `/healthz` needs the bearer token when the server has one (`api/auth.py`).
Handlers that touch the store are plain functions, run by FastAPI in its thread pool, or
await the store through `anyio.to_thread` (the log stream): the event loop never waits on
a database. Errors are JSON bodies (`api/errors.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request

from swarm_engine.api import (
    dashboard,
    errors,
    fleet,
    logs,
    metrics,
    registry,
    runs,
    tickets,
    triggers,
)
from swarm_engine.api.auth import require_token
from swarm_engine.api.deps import Server
from swarm_engine.api.methods import HeadAsGet
from swarm_engine.api.models import Health
from swarm_engine.api.queries import one_value_each
from swarm_engine.api.sites import LoopbackHost, SameOrigin
from swarm_engine.config import Settings

MAX_BODY_BYTES = 2 * 1024 * 1024
"""A request body larger than this is refused (413)."""


def create_app(settings: Settings, token: str | None = None) -> FastAPI:
    """The API over the stores `settings` name. `token`: the bearer token every request
    must carry (None: no token, for a server on a loopback address)."""
    from importlib.metadata import version

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            app.state.server.close()

    app = FastAPI(
        title="swarm-engine",
        version=version("swarm-engine"),
        description="Tickets in, isolated agent runs out: the HTTP API (docs/api.md).",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        responses=errors.RESPONSES,
    )
    app.state.server = Server.open(settings)
    app.state.token = token
    errors.install(app)
    app.add_middleware(HeadAsGet)
    app.add_middleware(errors.BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(SameOrigin)
    app.add_middleware(LoopbackHost, checked=token is None)
    app.add_middleware(errors.OneFraming)  # outermost: before all else
    one_value = Depends(one_value_each)  # a repeated single-valued query: 422 (after 401)
    secured = [Depends(require_token), one_value]
    for module in (tickets, logs, runs, fleet, registry, metrics):
        app.include_router(module.router, dependencies=secured)
    dashboard.install(app)  # /ui: the web dashboard (its pages check the token themselves)
    app.include_router(triggers.router, dependencies=[one_value])  # signed, not the token

    @app.get(
        "/healthz", response_model=Health, tags=["server"], summary="Liveness",
        dependencies=[one_value],
    )  # fmt: skip
    def healthz() -> Health:
        """Answers while the server runs (no token needed; reads nothing)."""
        return Health()

    @app.get("/openapi.json", tags=["server"], summary="OpenAPI schema", dependencies=secured)
    def openapi(request: Request) -> dict[str, Any]:
        """This API's OpenAPI 3 schema."""
        schema: dict[str, Any] = request.app.openapi()
        return schema

    return app
