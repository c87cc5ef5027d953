"""Query strings: a parameter that takes one value, given more than once
(`?limit=5&limit=500`, `?after=3&after=9`), is a 422 naming it, on every route, never
read as its last value (starlette's `query_params.get` takes the last, silently). A
parameter that is a list by design (`status` of the ticket lists) may be repeated. A
header a route declares (`Last-Event-ID` of the log stream) is held to the same rule:
given twice it is a 422 (`header.last-event-id: given 2 times ...`), never read as its
first value.

`one_value_each` is a dependency that reads which query parameters the matched route
declares, its own and its dependencies' (`route.dependant`: those of the router it was
declared on too; not those given to `include_router`, which read headers only), as
FastAPI reads them: one whose annotation is a sequence is read with `getlist`, any other
with `get`. Every router adds it after its token check (`api/app.py`,
`api/dashboard.py`), so a request without the token gets its 401 first, as for any other
bad parameter; a test checks that every route has it. A parameter a route does not
declare is ignored, repeated or not, as it always was.
"""

from __future__ import annotations

from collections import Counter

from fastapi import Request, params
from fastapi._compat import field_annotation_is_sequence
from fastapi.dependencies.utils import get_flat_params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

NOT_QUERY = (params.Path, params.Header, params.Cookie)


def single_valued(route: APIRoute, where: str = "query") -> frozenset[str]:
    """The names of the parameters `route` reads one value of (every parameter of it and
    its dependencies but those annotated as a sequence), of the query (`where`) or of
    the headers (`header`: the names in lower case, as HTTP compares them)."""

    def wanted(info: object) -> bool:
        if where == "header":
            return isinstance(info, params.Header)
        return not isinstance(info, NOT_QUERY)

    return frozenset(
        field.alias.lower() if where == "header" else field.alias
        for field in get_flat_params(route.dependant)
        if wanted(field.field_info)
        and not field_annotation_is_sequence(field.field_info.annotation)
    )


def one_value_each(request: Request) -> None:
    """A dependency: 422 (`invalid_request`, `query.limit: given 2 times; it takes one
    value`) when the query repeats a parameter the route reads one value of, or the
    request a header it reads one value of."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    counts: Counter[tuple[str, str]] = Counter()
    if request.query_params:
        names = single_valued(route)
        counts.update(("query", k) for k, _ in request.query_params.multi_items() if k in names)
    headers = single_valued(route, "header")
    if headers:
        counts.update(("header", k) for k, _ in request.headers.items() if k in headers)
    errors = [
        {
            "type": "repeated_parameter",
            "loc": where,
            "msg": f"given {times} times; it takes one value",
        }
        for where, times in counts.items()
        if times > 1
    ]
    if errors:
        raise RequestValidationError(errors)
