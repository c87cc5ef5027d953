"""Ticket ids at the edges of what a row can hold (a tester's findings). Any client may
write a ticket with id 2**63-1 (on SQLite once it dropped the guard that refuses ids
above 2**62), 0 or a negative id: the engine runs it, so every list
shows it (the first page once left the largest id out: `id < 2**63-1`), and every command
and the API address it (the CLI once refused 0 and negative ids as arguments). Both
stores; the real engine, CLI and server.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Target
from tests.support.api import start_api
from tests.support.cli import swarm, swarm_inproc

MAX = 2**63 - 1
MIN = -(2**63)
IDS = [MAX, 1, 0, -5, MIN]  # newest first, as every list orders them
TOKEN = "t0ken-for-the-edge-ids-test"


def home_with_edge_ids(store_target: Target, tmp_path: Path) -> Path:
    """A home whose tickets `IDS` (1 made by the CLI, the rest by an outside writer) ran."""
    home = tmp_path / "home"
    made = swarm_inproc(home, "ticket", "create", "--title", "one", "--agent", "echo",
                        **store_target.env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    if store_target.dialect == "sqlite":  # a client may drop the guard (0007_id_guard.sql)
        store_target.sql("DROP TRIGGER tickets_id_guard")
    else:  # (PostgreSQL's: 0010_sequence_repair.sql)
        store_target.sql("DROP TRIGGER tickets_id_guard ON tickets")
    store_target.sql(
        "INSERT INTO tickets (id, title, status, agent_id) VALUES"
        f" ({MAX}, 'max', 'open', 'echo'), (0, 'zero', 'open', 'echo'),"
        f" (-5, 'neg', 'open', 'echo'), ({MIN}, 'min', 'open', 'echo');"
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
    paged: list[int] = []  # one a page, each cursor the last id (0 and negatives too)
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
        seen: list[int] = []
        cursor: int | None = None
        while True:
            query = "" if cursor is None else f"&cursor={cursor}"
            page = api.get(f"/v1/tickets?limit=2{query}")
            assert page.status_code == 200, page.text
            seen += [t["id"] for t in page.json()["items"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert seen == IDS
        rows = api.get("/ui/tickets/rows", headers={"HX-Request": "true"},
                       cookies={"swarm_token": TOKEN})  # fmt: skip
        assert rows.status_code == 200
        assert all(f'href="/ui/tickets/{i}"' in rows.text for i in IDS), rows.text
    finally:
        api.stop()


def test_every_command_and_the_api_address_edge_ids(store_target: Target, tmp_path: Path) -> None:
    home = home_with_edge_ids(store_target, tmp_path)
    for tid in IDS:
        arg = str(tid)
        for command in (["ticket", "show", arg], ["ticket", "show", arg, "--json"],
                        ["ticket", "show", "--json", arg], ["logs", arg],
                        ["ticket", "steps", arg], ["ticket", "reopen", arg],
                        ["ticket", "cancel", arg]):  # fmt: skip
            got = swarm_inproc(home, *command, **store_target.env)
            assert got.returncode == 0, (command, got.stderr)
        assert f"ticket {tid} cancelled" in got.stdout
        again = swarm_inproc(home, "ticket", "reopen", "--", arg, **store_target.env)
        assert again.returncode == 0, again.stderr
    ran = swarm(home, "run-ticket", "-5", "--wait", timeout=120, **store_target.env)
    assert ran.returncode == 0 and "ticket -5 done" in ran.stdout, ran.stdout + ran.stderr
    (row,) = store_target.rows("SELECT status FROM tickets WHERE id = -5")
    assert row["status"] == "done"
    over = swarm_inproc(home, "ticket", "show", str(MAX + 1), **store_target.env)
    assert over.returncode == 2 and "(a whole number from -2^63 to 2^63-1)" in over.stderr

    api = start_api(home, token=TOKEN, **store_target.env)
    try:
        for tid in (MIN, -5, 0, MAX):
            assert api.get(f"/v1/tickets/{tid}").json()["id"] == tid
            assert api.get(f"/v1/tickets/{tid}/logs").status_code == 200
            page = api.get(f"/ui/tickets/{tid}", cookies={"swarm_token": TOKEN})
            assert page.status_code == 200, page.text
        done = api.post("/v1/tickets/bulk/cancel", json={"ids": [0, MIN]})
        assert done.status_code == 200, done.text
        assert api.get(f"/v1/tickets/{MAX + 1}").status_code == 422
    finally:
        api.stop()
    rows = store_target.rows("SELECT id, status FROM tickets WHERE id IN (0, %(min)s)", min=MIN)
    assert sorted((r["id"], r["status"]) for r in rows) == [(MIN, "cancelled"), (0, "cancelled")]
