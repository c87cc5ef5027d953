"""Ticket ids at the edges of what a row can hold (a tester's findings). Any client may
write a ticket with id 2**63-1: the engine runs it, so every list shows it (the first page
once left the largest id out: `id < 2**63-1`). Both stores; the real engine, CLI and server.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Target
from tests.support.api import start_api
from tests.support.cli import swarm, swarm_inproc

MAX = 2**63 - 1
IDS = [MAX, 1]  # newest first, as every list orders them
TOKEN = "t0ken-for-the-edge-ids-test"


def home_with_edge_ids(store_target: Target, tmp_path: Path) -> Path:
    """A home whose tickets `IDS` (1 made by the CLI, the rest by an outside writer) ran."""
    home = tmp_path / "home"
    made = swarm_inproc(home, "ticket", "create", "--title", "one", "--agent", "echo",
                        **store_target.env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    store_target.sql(
        f"INSERT INTO tickets (id, title, status, agent_id) VALUES ({MAX}, 'max', 'open', 'echo');"
    )
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=120, **store_target.env)
    assert done.returncode == 0, done.stdout + done.stderr
    return home


def listed(home: Path, store_target: Target, *args: str) -> list[int]:
    got = swarm_inproc(home, "ticket", "list", "--json", *args, **store_target.env)
    assert got.returncode == 0, got.stderr
    return [t["id"] for t in json.loads(got.stdout)]


def test_every_list_shows_edge_ids_and_pages_through_them(
    store_target: Target, tmp_path: Path
) -> None:
    home = home_with_edge_ids(store_target, tmp_path)
    assert listed(home, store_target) == IDS
    assert listed(home, store_target, "--status", "done") == IDS
    table = swarm_inproc(home, "ticket", "list", **store_target.env)
    assert all(str(i) in table.stdout for i in IDS), table.stdout
    paged: list[int] = []  # one a page, each cursor the last id
    args = ["--limit", "1"]
    while len(paged) < len(IDS) + 1:
        page = listed(home, store_target, *args)
        if not page:
            break
        paged += page
        args = ["--limit", "1", "--cursor", str(page[-1])]
    assert paged == IDS

    api = start_api(home, token=TOKEN, **store_target.env)
    try:
        got = api.get("/v1/tickets").json()
        assert [t["id"] for t in got["items"]] == IDS and got["next_cursor"] is None
        assert [t["id"] for t in api.get("/v1/tickets?status=done").json()["items"]] == IDS
        page = api.get("/v1/tickets?limit=1").json()
        assert [t["id"] for t in page["items"]] == [MAX] and page["next_cursor"] == MAX
        rows = api.get("/ui/tickets/rows", headers={"HX-Request": "true"},
                       cookies={"swarm_token": TOKEN})  # fmt: skip
        assert rows.status_code == 200
        assert all(f'href="/ui/tickets/{i}"' in rows.text for i in IDS), rows.text
    finally:
        api.stop()
