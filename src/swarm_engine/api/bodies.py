"""JSON request bodies read with each key once: an object holding a key twice (at any
depth) is refused with 422 `invalid_request` and one line (`body: duplicate key "a"`),
instead of the last value silently winning (Python's reading; SQLite's `json_extract`
reads the first), as `ticket create --inputs-json` refuses one. An integer of more digits
than Python reads (4300) is a 422 too (`body: a number of more than 4300 digits`), not
FastAPI's 400 `There was an error parsing the body`. A body that is not UTF-8, or starts
with a byte-order mark (`json.loads` on bytes reads UTF-16, UTF-32 and a BOM: RFC 8259
section 8.1 allows neither), is a 400 `bad_request` with one line (`body: it is UTF-16
(it starts with a byte-order mark); ...`), never read."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from swarm_engine.jsonwire import NotUtf8Json, wire_text
from swarm_engine.records import DuplicateKey, TooManyDigits, loads_unique


class UniqueKeysRequest(Request):
    """A request whose `json()` raises an HTTP 422 for a body holding a key twice; any
    other body is read as `Request.json` reads it, in one pass (bad JSON: FastAPI's
    422)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = loads_unique(wire_text(await self.body()))
            except NotUtf8Json as exc:
                raise HTTPException(status_code=400, detail=f"body: {exc}") from None
            except DuplicateKey as exc:
                raise HTTPException(status_code=422, detail=f"body: {exc.line}") from None
            except json.JSONDecodeError:
                raise  # FastAPI's answer: 422 naming where it stops being JSON
            except TooManyDigits as exc:  # an integer past `sys.get_int_max_str_digits`
                raise too_many_digits(exc) from None
        return self._json


def too_many_digits(exc: TooManyDigits) -> HTTPException:
    """The answer to a JSON body holding an integer too long to read, on every route:
    422 `invalid_request`, `body: a number of more than 4300 digits`."""
    return HTTPException(status_code=422, detail=f"body: {exc.line}")


class UniqueKeysRoute(APIRoute):
    """A route whose JSON body is read by `UniqueKeysRequest` (`APIRouter(route_class=...)`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(UniqueKeysRequest(request.scope, request.receive))

        return route
