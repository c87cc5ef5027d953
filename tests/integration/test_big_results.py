"""A ticket's `result` as any client may write it: one over `MAX_RESULT_BYTES` (8 MiB) is a
row defect, read as null and never handed over by the store (each read of a ticket
measures it in SQL), so a list, `ticket show --json` and the API say it is too big rather
than answer it whole; and a list page stays bounded in bytes even for its first ticket,
whose biggest values are left out of the list (with a line saying so) when it alone is
more than the page holds."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import Target
from tests.support.api import start_api
from tests.support.cli import swarm_inproc

from swarm_engine.records import MAX_RESULT_BYTES
from swarm_engine.service.tickets import PAGE_BYTES, page
from swarm_engine.store import open_store

MiB = 1024 * 1024
TOKEN = "a-token-for-the-big-results"
BIG = json.dumps({"big": "x" * (MAX_RESULT_BYTES + 1000)})
"""A result just over the cap (the cap: 8 MiB; 60 MB behaves the same, slower to write)."""


def insert(target: Target, rows: list[tuple[str, str, str]]) -> None:
    """Tickets (title, inputs, result), done, as another client writes them."""
    sql = "INSERT INTO tickets (title, status, agent_id, inputs, result) VALUES "
    if target.dialect == "sqlite":
        conn = sqlite3.connect(target.target, timeout=30)
        with conn:
            conn.executemany(sql + "(?, 'done', 'echo', ?, ?)", rows)
        conn.close()
        return
    import psycopg

    with psycopg.connect(str(target.target), autocommit=True) as pg, pg.transaction():
        for row in rows:
            pg.execute(sql + "(%s, 'done', 'echo', %s::jsonb, %s::jsonb)", row)


def set_description(target: Target, ticket_id: int, text: str) -> None:
    """Ticket `ticket_id`'s description set to `text`, as another client writes it."""
    if target.dialect == "sqlite":
        conn = sqlite3.connect(target.target, timeout=30)
        with conn:
            conn.execute("UPDATE tickets SET description = ? WHERE id = ?", (text, ticket_id))
        conn.close()
        return
    import psycopg

    with psycopg.connect(str(target.target), autocommit=True) as pg:
        pg.execute("UPDATE tickets SET description = %s WHERE id = %s", (text, ticket_id))


@pytest.fixture
def home(store_target: Target, tmp_path: Path) -> Iterator[Path]:
    """Tickets 1 (a small result) and 2 (a result over the cap: the newest)."""
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", **store_target.env).returncode == 0
    insert(store_target, [("small", "{}", '{"n": 1}'), ("big", "{}", BIG)])
    yield home


def test_a_result_over_the_cap_is_a_defect_never_read(store_target: Target, home: Path) -> None:
    size = len(BIG.encode()) if store_target.dialect == "sqlite" else None
    store = open_store(store_target.target)
    try:
        # the store's reads of a ticket never hand the value over: SQL measures it
        raw = store.tickets.db.all(store.tickets.q.page, {
            "agent": None, "workflow": None, "through": 2**63 - 1, "limit": 10})  # fmt: skip
        assert [r["result"] is None for r in raw] == [True, False]
        assert raw[0]["result_bytes"] > MAX_RESULT_BYTES
        size = raw[0]["result_bytes"]  # (PostgreSQL's jsonb text: its own spacing)
        found = page(store, limit=50)
        big, small = found.items
        why = f"result: {size:,} bytes of JSON, more than the 8 MiB a ticket's result may hold"
        assert big.result is None and big.defects == (why + " (not read)",)
        assert small.result == {"n": 1} and small.defects == ()
        assert store.tickets.get(2).defects == big.defects
    finally:
        store.close()

    listed = swarm_inproc(home, "ticket", "list", **store_target.env)
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout) < 4096 and "result: " in listed.stdout
    shown = swarm_inproc(home, "ticket", "show", "2", "--json", **store_target.env)
    assert shown.returncode == 0, shown.stderr
    assert len(shown.stdout) < 64 * 1024
    ticket = json.loads(shown.stdout)
    assert ticket["result"] is None and ticket["defects"] == [why + " (not read)"]
    human = swarm_inproc(home, "ticket", "show", "2", **store_target.env)
    assert why in human.stdout and len(human.stdout) < 64 * 1024

    api = start_api(home, token=TOKEN, **store_target.env)
    try:
        got = api.get("/v1/tickets", params={"limit": 50})
        assert got.status_code == 200 and len(got.content) < 64 * 1024
        items = got.json()["items"]
        assert [i["result"] for i in items] == [None, {"n": 1}]
        assert items[0]["defects"] == [why + " (not read)"]
        one = api.get("/v1/tickets/2")
        assert one.status_code == 200 and len(one.content) < 64 * 1024
        assert one.json()["defects"] == [why + " (not read)"]
        rows = api.get("/ui/tickets/rows", headers={"HX-Request": "true"},
                       cookies={"swarm_token": TOKEN})  # fmt: skip
        assert rows.status_code == 200 and len(rows.content) < 64 * 1024
    finally:
        api.stop()


def test_a_first_ticket_bigger_than_a_page_is_listed_without_its_biggest_value(
    store_target: Target, home: Path
) -> None:
    """Inputs and result each under their caps, together over the page's 8 MiB: the first
    ticket of its page comes with its result (the bigger) left out, a line saying so; the
    page holds the rest as ever, and the ticket itself still holds its result."""
    inputs = json.dumps({"doc": "i" * (5 * MiB)})
    result = json.dumps({"out": "r" * (6 * MiB)})
    insert(store_target, [("huge", inputs, result)])
    store = open_store(store_target.target)
    try:
        found = page(store, limit=50)
        assert [t.id for t in found.items] == [3, 2, 1] and found.next_cursor is None
        first = found.items[0]
        assert first.result is None and first.inputs == json.loads(inputs)
        (line,) = first.defects
        assert line.startswith("result: ") and "bytes of JSON, left out of this list" in line
        assert "ticket show 3" in line
        listed = len(json.dumps([t.as_dict() for t in found.items]))
        assert listed < PAGE_BYTES
        whole = store.tickets.get(3)
        assert whole.result == json.loads(result) and whole.defects == ()
    finally:
        store.close()


def test_a_text_left_out_of_a_list_keeps_its_start() -> None:
    from swarm_engine.service.tickets import KEPT_CHARS, fitted
    from swarm_engine.store.rows import Ticket

    big = Ticket(id=7, title="t", description="d" * (9 * MiB), result={"n": 1})
    listed = fitted(big, PAGE_BYTES)
    assert listed.description.startswith("d" * KEPT_CHARS + " [... left out of this list")
    assert len(listed.description) < 1000 and listed.result == {"n": 1}
    assert listed.defects == (
        f"description: {9 * MiB + 2:,} bytes, cut in this list (`swarm-engine ticket show 7`"
        " or GET /v1/tickets/7 has it)",
    )


def test_a_title_or_description_over_its_cap_is_read_as_its_start(
    store_target: Target, tmp_path: Path
) -> None:
    """A title over 64 KiB or a description over 1 MiB (UTF-8) is a defect of its row, and
    the store's reads hand over only its first 200 characters, with its size: a list, a
    claim or a lease's reader never copies the whole value another client wrote."""
    from swarm_engine.records import MAX_DESCRIPTION_BYTES, MAX_TITLE_BYTES

    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", **store_target.env).returncode == 0
    insert(store_target, [("é" * MAX_TITLE_BYTES, "{}", "null"), ("fits", "{}", "null")])
    description = "d" * (MAX_DESCRIPTION_BYTES + 1)
    store = open_store(store_target.target)
    try:
        found = {t.id: t for t in page(store, limit=10).items}
    finally:
        store.close()
    set_description(store_target, 2, description)
    store = open_store(store_target.target)
    try:
        described = store.tickets.get(2)
    finally:
        store.close()
    assert found[1].title == "é" * 200
    assert found[1].defects == (
        f"title: {2 * MAX_TITLE_BYTES:,} bytes of text, more than the 64 KiB it may hold",
    )
    assert found[2].title == "fits" and found[2].defects == ()
    assert described.description == "d" * 200
    assert described.defects == (
        f"description: {MAX_DESCRIPTION_BYTES + 1:,} bytes of text, more than the 1 MiB it"
        " may hold",
    )
