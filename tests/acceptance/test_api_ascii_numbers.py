"""The API reads an id or a whole number in a path or a query as the CLI does: ASCII
digits with an optional `-` (`-?[0-9]+`), anything else a 422 naming the parameter
(`api/numbers.py`). pydantic's lax `int` took `' 1'`, `'1 '`, `'+1'`, `'1_0'`, `'1.0'`
and `'1\\n'`: `GET /v1/tickets/1_0` showed ticket 10. JSON bodies are strict: an int
field takes a JSON integer only (`true`, `1.0`, `1e3`, `"1"` are 422s), a float field
any JSON number. A real server on a SQLite store; every odd value against every
numeric parameter, then random text against the same rule."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.api import Api, start_api
from tests.support.cli import swarm_inproc

MAX = 2**63 - 1
MIN = -(2**63)
TICKETS = (0, 1, 3, 10, 16, 100, 1000)
"""Drafts an outside writer stores: what a value misread would name (`1_0`: 10, `٣`: 3,
`0x10`: 16, `1e3`: 1000, `1.0`/`+1`/` 1`: 1, `-0`: 0)."""
ODD = [" 1", "1 ", "+1", "1_0", "\u0663", "\uff11", "1e3", "1.0", "true", "0x10", "1\n",
       "\t1", "", "-0", "01", "-1", "1", "10", str(2**63), str(2**64), str(MIN - 1), str(MIN),
       str(MAX), "9" * 5000, "- 1", "--1", "1-", "\uff11\uff10"]  # fmt: skip
ASCII_WHOLE = re.compile(r"-?[0-9]+", re.ASCII)
PATHS = [  # (a path with {v}, the parameter's name in the error, its range)
    ("/v1/tickets/{v}", "path.ticket_id", MIN, MAX),
    ("/v1/tickets/{v}/runs", "path.ticket_id", MIN, MAX),
    ("/v1/tickets/{v}/events", "path.ticket_id", MIN, MAX),
    ("/v1/tickets/{v}/logs", "path.ticket_id", MIN, MAX),
    ("/v1/runs/{v}", "path.run_id", MIN, MAX),
    ("/v1/runs/{v}/steps", "path.run_id", MIN, MAX),
    ("/ui/tickets/{v}", "path.ticket_id", MIN, MAX),
    ("/v1/tickets?limit={v}", "query.limit", 1, 1000),
    ("/v1/tickets?cursor={v}", "query.cursor", MIN, MAX),
    ("/v1/tickets/1/runs?before={v}", "query.before", MIN, MAX),
    ("/v1/tickets/1/runs?limit={v}", "query.limit", 1, 100),
    ("/v1/tickets/1/events?before={v}", "query.before", MIN, MAX),
    ("/v1/tickets/1/events?limit={v}", "query.limit", 1, 1000),
    ("/v1/tickets/1/logs?run={v}", "query.run", MIN, MAX),
    ("/v1/tickets/1/logs/stream?after={v}", "query.after", MIN, MAX),
    ("/v1/tickets/1/logs/stream?run={v}", "query.run", MIN, MAX),
    ("/v1/runs?limit={v}", "query.limit", 1, 1000),
    ("/v1/runs/1/steps?before={v}", "query.before", MIN, MAX),
    ("/v1/agents?limit={v}", "query.limit", 1, 1000),
    ("/v1/workflows?limit={v}", "query.limit", 1, 1000),
    ("/v1/workflows/none/runs?limit={v}", "query.limit", 1, 1000),
    ("/ui?cursor={v}", "query.cursor", MIN, MAX),
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    home = tmp_path_factory.mktemp("ascii") / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    with sqlite3.connect(home / "tickets.db") as conn:  # an outside writer
        conn.executemany(
            "INSERT INTO tickets (id, title, status, agent_id) VALUES (?, ?, 'draft', 'echo')",
            [(i, f"ticket {i}") for i in TICKETS],
        )
    conn.close()
    server = start_api(home)
    yield server
    server.stop()


def whole(text: str, least: int, most: int) -> bool:
    """`text` is `-?[0-9]+` and names a number from `least` to `most`."""
    if ASCII_WHOLE.fullmatch(text) is None or len(text.lstrip("-").lstrip("0")) > 20:
        return False
    return least <= int(text) <= most


def check(api: Api, template: str, where: str, least: int, most: int, value: str) -> None:
    """`value` in `template` is answered as its ASCII digits say, or refused with a 422
    naming `where` in one line; never a 500."""
    escaped = quote(value, safe="").replace(".", "%2E")  # a bare `.` or `..` is a dot segment
    got = api.get(template.format(v=escaped), timeout=60)
    assert got.status_code < 500, (template, value, got.status_code, got.text[:300])
    if not whole(value, least, most):
        assert got.status_code == 422, (template, value, got.status_code, got.text[:300])
        body = got.json()
        assert body["error"] == "invalid_request", body
        assert body["message"].startswith(f"{where}: "), (value, body["message"])
        assert "\n" not in body["message"] and len(body["message"]) < 300, body["message"]
        return
    assert got.status_code != 422, (template, value, got.text[:300])
    if template == "/v1/tickets/{v}" and int(value) in TICKETS:
        assert got.status_code == 200 and got.json()["id"] == int(value), (value, got.text)
    elif template == "/v1/tickets/{v}":
        assert got.status_code == 404, (value, got.text)


@pytest.mark.parametrize(("template", "where", "least", "most"), PATHS)
def test_each_numeric_parameter_takes_ascii_digits_only(
    api: Api, template: str, where: str, least: int, most: int
) -> None:
    for value in ODD:
        if value == "" and where.startswith("path."):
            continue  # an empty path segment makes another path (the list, or a 404)
        check(api, template, where, least, most, value)


def test_what_a_misread_value_would_name_is_left_alone(api: Api) -> None:
    """`POST /v1/tickets/{id}/open` with each odd value opens ticket 0 (`-0`) and no
    other: `1_0` never opened ticket 10, nor `' 1'` ticket 1."""
    for value in ODD:
        if value == "":
            continue
        got = api.post(f"/v1/tickets/{quote(value, safe='')}/open", timeout=60)
        assert got.status_code in (200, 404, 422), (value, got.status_code, got.text[:300])
        assert (got.status_code == 422) != whole(value, MIN, MAX), (value, got.text)
    statuses = {t: api.get(f"/v1/tickets/{t}").json()["status"] for t in TICKETS}
    assert statuses == {t: "open" if t in (0, 1, 10) else "draft" for t in TICKETS}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet="0123456789-+_.e x\u0663\uff11\n\t", max_size=12))
def test_random_text_is_a_ticket_id_only_in_ascii_digits(api: Api, value: str) -> None:
    if value:
        check(api, "/v1/tickets/{v}", "path.ticket_id", MIN, MAX, value)
    check(api, "/v1/tickets?limit={v}", "query.limit", 1, 1000, value)


INT_FIELDS = {"priority": (MIN, MAX), "max_attempts": (1, 100)}
JSON_VALUES = ["1", "-0", "true", "false", "null", "1.0", "1e3", "1E0", '"1"', '" 1"', "0x10",
               str(2**63), str(MIN - 1), str(MAX), "-0.0", "2", "1" + "0" * 5000]  # fmt: skip


def post_ticket(api: Api, field: str, raw: str) -> tuple[int, dict[str, object]]:
    text = json.dumps({"title": "j", "agent": "echo", "draft": True})[:-1] + f', "{field}": {raw}}}'
    got = api.post("/v1/tickets", data=text, headers={"Content-Type": "application/json"})
    assert got.status_code < 500, (field, raw, got.text[:300])
    body: dict[str, object] = got.json()
    return got.status_code, body


def test_an_int_field_of_a_body_takes_a_json_integer_only(api: Api) -> None:
    for field, (least, most) in INT_FIELDS.items():
        for raw in JSON_VALUES:
            status, body = post_ticket(api, field, raw)
            if whole(raw, least, most):
                assert status == 201 and body[field] == int(raw), (field, raw, body)
                continue
            assert status in (400, 413, 422), (field, raw, status, body)
            message = str(body["message"])
            assert "\n" not in message and len(message) < 300, message
            if raw == "0x10":  # not JSON at all: where it stops being JSON is named
                assert message.startswith("body."), message
            elif len(raw) > 4300:  # more digits than Python reads: the body is named
                assert status == 422 and message.startswith("body: "), message
            else:
                assert message.startswith(f"body.{field}: "), (field, raw, message)


def test_a_float_field_takes_any_finite_json_number_in_range(api: Api) -> None:
    for raw in JSON_VALUES:
        status, body = post_ticket(api, "timeout_seconds", raw)
        try:
            number = json.loads(raw)
        except ValueError:
            number = None
        fits = (
            isinstance(number, int | float) and not isinstance(number, bool)
            and 0.001 <= number <= 365 * 86400
        )  # fmt: skip
        if fits:
            assert status == 201 and body["timeout_seconds"] == float(raw), (raw, body)
        elif raw == "null":
            assert status == 201 and body["timeout_seconds"] is None, body
        else:
            assert status in (400, 422), (raw, status, body)
            assert "\n" not in str(body["message"]), body


def test_bulk_ids_are_json_integers(api: Api) -> None:
    for raw in JSON_VALUES:
        got = api.post("/v1/tickets/bulk/retry", data=f'{{"ids": [{raw}]}}',
                       headers={"Content-Type": "application/json"})  # fmt: skip
        assert got.status_code < 500, (raw, got.text[:300])
        if whole(raw, MIN, MAX):
            assert got.status_code == 200, (raw, got.text)
            assert [s["id"] for s in got.json()["skipped"]] == [int(raw)], got.text
        else:
            assert got.status_code in (400, 422), (raw, got.status_code, got.text[:300])
            assert "\n" not in got.json()["message"], got.text


def test_a_definition_takes_json_numbers_only(api: Api) -> None:
    """`POST /v1/agents`: an agent's `memory_mb` is a JSON integer, its `timeout_seconds`
    any JSON number; text, `true` (and `256.0` for the integer) are a 422 naming the field,
    as for agent.yaml."""
    for i, (field, raw, taken) in enumerate([
        ("memory_mb", "256", 256), ("memory_mb", '"256"', None), ("memory_mb", '" 256"', None),
        ("memory_mb", "256.0", None), ("memory_mb", "true", None), ("memory_mb", "2e2", None),
        ("timeout_seconds", "30", 30.0), ("timeout_seconds", "3e1", 30.0),
        ("timeout_seconds", '"30"', None), ("timeout_seconds", "true", None),
    ]):  # fmt: skip
        text = f'{{"name": "n{i}", "version": "1", "kind": "shell", "command": "true", "{field}": {raw}}}'
        got = api.post("/v1/agents", data=text, headers={"Content-Type": "application/json"})
        if taken is None:
            assert got.status_code == 422, (field, raw, got.text[:300])
            assert field in got.json()["message"], got.text
            assert "\n" not in got.json()["message"], got.text
        else:
            assert got.status_code == 201 and got.json()[field] == taken, (field, raw, got.text)
