"""A query parameter that takes one value, given twice (`?limit=5&limit=500`), is a 422
naming it in one line, on every route, the dashboard's included; before, the last value
was taken silently. A parameter that is a list by design (`status`) stays repeatable,
the dashboard's own query strings work, and a request without the token gets its 401
first (`api/queries.py`). A real server on a SQLite store."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.api import Api, start_api
from tests.support.cli import swarm_inproc

TOKEN = "t0ken-for-the-query-tests"
DASHBOARD = [  # (method, path, a single-valued query parameter): not in the schema
    ("GET", "/ui", "agent"),
    ("GET", "/ui", "workflow"),
    ("GET", "/ui", "cursor"),
    ("GET", "/ui/tickets/rows", "agent"),
    ("GET", "/ui/tickets/rows", "cursor"),
    ("GET", "/ui/login", "token"),
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    home = tmp_path_factory.mktemp("repeats") / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    with sqlite3.connect(home / "tickets.db") as conn:  # an outside writer
        conn.executemany(
            "INSERT INTO tickets (id, title, status, agent_id) VALUES (?, ?, ?, 'echo')",
            [(1, "one", "open"), (2, "two", "failed"), (3, "three", "done")],
        )
    conn.close()
    server = start_api(home, token=TOKEN)
    yield server
    server.stop()


def single_valued(api: Api) -> list[tuple[str, str, str]]:
    """(method, path with its ids filled in, parameter) of every query parameter of the
    OpenAPI schema that is not a list, and of the dashboard's."""
    found = []
    for path, operations in api.get("/openapi.json").json()["paths"].items():
        for method, operation in operations.items():
            for param in operation.get("parameters", []):
                schema = param["schema"]
                kinds = [s.get("type") for s in schema.get("anyOf", [schema])]
                if param["in"] == "query" and "array" not in kinds:
                    found.append((method.upper(), re.sub(r"\{\w+\}", "1", path), param["name"]))
    return found + DASHBOARD


def call(api: Api, method: str, path: str, **kw: Any) -> Any:
    headers = {"HX-Request": "true", "Content-Type": "application/json"}
    return api.call(method, path, data="{}" if method == "POST" else None, headers=headers,
                    allow_redirects=False, **kw)  # fmt: skip


def test_every_single_valued_query_parameter_given_twice_is_a_422(api: Api) -> None:
    cases = single_valued(api)
    assert len(cases) >= 25, cases  # (the schema's and the dashboard's; none lost)
    for method, path, name in cases:
        got = call(api, method, f"{path}?{name}=1&{name}=1")
        assert got.status_code == 422, (method, path, name, got.status_code, got.text[:300])
        body = got.json()
        assert body["error"] == "invalid_request", body
        assert body["message"] == f"query.{name}: given 2 times; it takes one value", body
        with call(api, method, f"{path}?{name}=1", stream=True) as once:  # (a live stream)
            if once.status_code == 422:  # refused for another reason, never this one
                assert "given" not in once.text, (method, path, name, once.text[:300])


def test_the_message_counts_and_names_each_repeated_parameter(api: Api) -> None:
    got = api.get("/v1/tickets?limit=5&limit=500&limit=7&cursor=9&lim%69t=2&cursor=8")
    assert got.status_code == 422
    assert got.json()["message"] == "query.limit: given 4 times; it takes one value (and 1 more)"
    assert [d["loc"] for d in got.json()["details"]] == [["query", "limit"], ["query", "cursor"]]
    stream = api.get("/v1/tickets/1/logs/stream?after=3&after=9", timeout=30)
    assert stream.status_code == 422
    assert stream.json()["message"] == "query.after: given 2 times; it takes one value"


def test_a_list_parameter_and_unknown_ones_stay_repeatable(api: Api) -> None:
    got = api.get("/v1/tickets?status=open&status=failed&other=1&other=2")
    assert got.status_code == 200, got.text
    assert sorted(t["id"] for t in got.json()["items"]) == [1, 2]


def test_the_dashboards_query_strings_still_work(api: Api) -> None:
    """Its filter form (statuses checked, agent and workflow typed), its rows' poll
    (`hx-include` of that form) and its `older` link (`ticket_rows.html`)."""
    api.session.cookies.set("swarm_token", TOKEN)
    try:
        for path in (
            "/ui?status=open&status=failed&agent=&workflow=",
            "/ui/tickets/rows?status=open&status=done&agent=&workflow=&cursor=3",
            "/ui?status=open&status=failed&agent=&workflow=&cursor=3",
        ):
            got = api.get(path, token=None)
            assert got.status_code == 200, (path, got.text[:300])
            assert "<html" in got.text or "<tr" in got.text or "<p" in got.text, got.text[:300]
    finally:
        api.session.cookies.clear()


def test_a_request_without_the_token_gets_its_401_first(api: Api) -> None:
    got = api.get("/v1/tickets?limit=5&limit=500", token=None)
    assert got.status_code == 401, got.text
    assert api.get("/v1/tickets?limit=5&limit=500", token="x" * 20).status_code == 401


def test_every_route_refuses_repeats(tmp_path: Path) -> None:
    """Each route of the app (a new router's too) carries the check, after its token's:
    the dependencies it runs, its routers' included (FastAPI's route contexts)."""
    from fastapi.routing import APIRoute, iter_route_contexts

    from swarm_engine.api.app import create_app
    from swarm_engine.api.auth import require_token
    from swarm_engine.api.dashboard import page_token
    from swarm_engine.api.queries import one_value_each
    from swarm_engine.config import Settings

    app = create_app(Settings(home=tmp_path))
    try:
        checked = []
        for context in iter_route_contexts(app.routes):
            route = context.original_route
            if not isinstance(route, APIRoute):
                continue  # the dashboard's static files
            effective = context._route_context  # (with the dependencies of its include)
            dependant = effective.dependant if effective is not None else route.dependant
            assert dependant is not None, route.path
            calls = [d.call for d in dependant.dependencies]
            assert one_value_each in calls, route.path
            token = [c for c in calls if c in (require_token, page_token)]
            if token:
                assert calls.index(token[0]) < calls.index(one_value_each), route.path
            checked.append(route.path)
        assert len(checked) > 30 and "/ui/login" in checked and "/v1/tickets" in checked
    finally:
        app.state.server.close()


def test_a_header_the_route_reads_once_given_twice_is_a_422(api: Api) -> None:
    """`Last-Event-ID` twice (a proxy adding its own, say) was read as its first value:
    now the request is refused naming it, as a repeated query parameter is."""
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(api.url)
    assert where.hostname is not None and where.port is not None
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    try:
        conn.putrequest("GET", "/v1/tickets/1/logs/stream")
        for name, value in (*api.headers().items(), ("Last-Event-ID", "1"), ("last-event-id", "9")):
            conn.putheader(name, value)
        conn.endheaders()
        got = conn.getresponse()
        body = got.read()
    finally:
        conn.close()
    assert got.status == 422, body[:300]
    assert b"header.last-event-id: given 2 times; it takes one value" in body, body[:300]


def raw_get(api: Api, path: str, headers: list[tuple[str, str]]) -> tuple[int, bytes, str]:
    """GET `path` with `headers` as given, repeats kept: (status, body, WWW-Authenticate)."""
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(api.url)
    assert where.hostname is not None and where.port is not None
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    try:
        conn.putrequest("GET", path)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        got = conn.getresponse()
        return got.status, got.read(), got.getheader("WWW-Authenticate") or ""
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/v1/tickets", "/v1/tickets/1", "/metrics", "/ui/tickets/rows"])
def test_an_authorization_header_given_twice_is_a_401_whatever_its_order(
    api: Api, path: str
) -> None:
    """The server's token and a wrong one, as two Authorization headers (a proxy adding
    its own, say): the first was read, so one order passed (200) and the other did not.
    Authorization is a singleton field (RFC 9110 section 11.6.2): now a 401 either way,
    the token right twice included, never either value read."""
    good, bad = f"Bearer {TOKEN}", "Bearer wrong-token-wrong-token"
    for pair in ((good, bad), (bad, good), (good, good)):
        headers = [("Authorization", pair[0]), ("authorization", pair[1]), ("HX-Request", "true")]
        status, body, challenge = raw_get(api, path, headers)
        assert status == 401, (pair, body[:300])
        assert challenge == "Bearer"
        assert b"the Authorization header is given 2 times; it takes one value" in body
        assert b"unauthorized" in body or path.startswith("/ui"), body[:300]
    status, body, _ = raw_get(api, path, [("Authorization", good), ("HX-Request", "true")])
    assert status == 200, body[:300]  # once, it is read as ever
