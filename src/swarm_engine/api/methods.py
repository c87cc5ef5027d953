"""Which methods a path answers: `HEAD` on every `GET` route (`HeadAsGet`), and the
`Allow` header of a 405 (`allowed_methods`)."""

from __future__ import annotations

from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""The methods asked about when listing a path's (`allowed_methods`)."""


def allowed_methods(scope: Scope) -> list[str]:
    """The methods some route of the app (`scope["app"]`) answers at the scope's path,
    in `METHODS` order; `HEAD` wherever `GET` is (`HeadAsGet`). Asks each top-level
    route whether it matches, so included routers answer for their own routes."""
    routes = scope["app"].router.routes
    root = scope.get("app_root_path", scope.get("root_path", ""))  # (a mount changes it)
    probe = {"type": scope["type"], "path": scope["path"], "root_path": root}
    answered = {
        method
        for method in METHODS
        for route in routes
        if not isinstance(route, Mount)  # (matches every method)
        and route.matches({**probe, "method": method})[0] == Match.FULL
    }
    if any(isinstance(r, Mount) and r.matches(probe)[0] != Match.NONE for r in routes):
        answered.add("GET")  # the dashboard's static files
    if "GET" in answered:
        answered.add("HEAD")
    return [method for method in METHODS if method in answered]


class _Answered(Exception):
    """Raised through the app once a HEAD request's headers are sent: its body is not."""


class HeadAsGet:
    """ASGI middleware: a `HEAD` request is routed as `GET` (so every GET route answers
    it, with the same status and headers); once the headers are sent, the answer ends
    with an empty body and the app stops computing it (a log stream too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] != "http.response.start":
                return  # the body (never sent for HEAD)
            await send(message)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            raise _Answered

        try:
            await self.app({**scope, "method": "GET"}, receive, headers_only)
        except _Answered:
            pass
        except BaseExceptionGroup as group:  # raised inside a task group (a stream)
            _, rest = group.split(_Answered)
            if rest is not None:
                raise rest from None
