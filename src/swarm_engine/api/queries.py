"""Query strings: a parameter that takes one value, given more than once
(`?limit=5&limit=500`, `?after=3&after=9`), is a 422 naming it, on every route, never
read as its last value (starlette's `query_params.get` takes the last, silently). A
parameter that is a list by design (`status` of the ticket lists) may be repeated.

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


def single_valued(route: APIRoute) -> frozenset[str]:
    """The names of the query parameters `route` reads one value of (every query
    parameter of it and its dependencies but those annotated as a sequence)."""
    return frozenset(
        field.alias
        for field in get_flat_params(route.dependant)
        if not isinstance(field.field_info, NOT_QUERY)
        and not field_annotation_is_sequence(field.field_info.annotation)
    )


def one_value_each(request: Request) -> None:
    """A dependency: 422 (`invalid_request`, `query.limit: given 2 times; it takes one
    value`) when the query repeats a parameter the route reads one value of."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    names = single_valued(route)
    counts = Counter(key for key, _ in request.query_params.multi_items() if key in names)
    errors = [
        {
            "type": "repeated_parameter",
            "loc": ("query", name),
            "msg": f"given {times} times; it takes one value",
        }
        for name, times in counts.items()
        if times > 1
    ]
    if errors:
        raise RequestValidationError(errors)
