"""An agent or workflow reference in a path, a query or a body that is neither `NAME` nor
`NAME@VERSION` (`echo@`: no version after the `@`) is a 422 `invalid_request` naming the
parameter, as any value of the wrong shape is; it was `invalid_definition`, the code of a
definition the registry refuses (`api/refs.py`). A definition that refers to `echo@` is
still `invalid_definition`. A real server on a SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.api import Api, start_api
from tests.support.cli import swarm_inproc

WHY = "has no version after '@' (write NAME for the latest version, or NAME@VERSION)"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    home: Path = tmp_path_factory.mktemp("refs") / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    server = start_api(home)
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("method", "path", "kw", "where", "ref"),
    [
        ("GET", "/v1/tickets", {"params": {"agent": "echo@"}}, "query.agent", "echo@"),
        ("GET", "/v1/tickets", {"params": {"workflow": "hook@"}}, "query.workflow", "hook@"),
        ("GET", "/v1/runs", {"params": {"workflow": "hook@"}}, "query.workflow", "hook@"),
        ("GET", "/v1/agents/echo@", {}, "path.ref", "echo@"),
        ("GET", "/v1/workflows/hook@", {}, "path.ref", "hook@"),
        ("GET", "/v1/workflows/hook@/runs", {}, "path.ref", "hook@"),
        ("POST", "/v1/tickets", {"json": {"title": "t", "agent": "echo@"}}, "body.agent", "echo@"),
        ("POST", "/v1/tickets", {"json": {"title": "t", "workflow": "w@"}}, "body.workflow", "w@"),
    ],
)
def test_a_reference_with_no_version_after_the_at_is_an_invalid_request(
    api: Api, method: str, path: str, kw: dict[str, Any], where: str, ref: str
) -> None:
    answer = api.call(method, path, **kw)
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["error"] == "invalid_request", body
    assert body["message"] == f"{where}: {ref!r} {WHY}", body
    assert body["details"] == [{"loc": where.split("."), "msg": f"{ref!r} {WHY}"}], body
    assert api.get("/v1/tickets").json()["items"] == []  # nothing made


def test_a_definition_referring_to_no_version_is_still_an_invalid_definition(api: Api) -> None:
    workflow = {"name": "w", "steps": [{"id": "a", "agent": "echo@"}]}
    answer = api.post("/v1/workflows", json=workflow)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "invalid_definition", answer.text
    assert f"step 'a': agent 'echo@' {WHY}" in answer.json()["message"]
    fine = api.get("/v1/tickets", params={"agent": "echo", "workflow": "w@1"})
    assert fine.status_code == 200 and fine.json()["items"] == [], fine.text
