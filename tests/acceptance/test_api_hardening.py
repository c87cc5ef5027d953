"""What a fresh tester found in the API: a page of tickets is bounded in bytes, and a
browser page from another site cannot drive a tokenless loopback server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.api import Api, start_api
from tests.support.cli import swarm_inproc


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    server = start_api(home)
    yield server
    server.stop()


def test_a_request_from_another_site_changes_nothing(api: Api) -> None:
    made = api.post("/v1/tickets", json={"title": "t", "agent": "echo", "draft": True})
    assert made.status_code == 201, made.text
    tid = made.json()["id"]
    foreign = api.post(f"/v1/tickets/{tid}/cancel", headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and "another site" in foreign.json()["message"]
    assert api.get(f"/v1/tickets/{tid}").json()["status"] == "draft"
    own = api.url.split("://", 1)[1]
    same = api.post(f"/v1/tickets/{tid}/cancel", headers={"Origin": f"http://{own}"})
    assert same.status_code == 200 and same.json()["status"] == "cancelled"


def test_a_page_of_big_tickets_is_bounded_in_bytes(api: Api) -> None:
    blob = "x" * (1536 * 1024)  # 1.5 MiB of inputs each, under the 2 MiB body limit
    ids = []
    for i in range(8):
        made = api.post("/v1/tickets", json={"title": f"big {i}", "agent": "echo",
                                             "draft": True, "inputs": {"blob": blob}})  # fmt: skip
        assert made.status_code == 201, made.text[:200]
        ids.append(made.json()["id"])
    seen: list[int] = []
    cursor = None
    while True:
        page = api.get("/v1/tickets?limit=50" + (f"&cursor={cursor}" if cursor else ""))
        assert page.status_code == 200
        assert len(page.content) < 12 * 1024 * 1024
        body = page.json()
        seen += [t["id"] for t in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)  # every ticket, over more than one page, once
    assert len(json.dumps(seen)) > 0
