"""A one-line error that names a value from a row shows at most its first 200 characters
and how long it was (`records.shown`): a 100 KB unknown `agent_id`, or a 100 KB input its
agent's schema refuses, fails its ticket with a short line, not a copy of the value in
`tickets.error` and in its event's `note`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.support.cli import query, swarm

LONG = 100_000


def insert(db: Path, agent_id: str, inputs: object) -> int:
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        cur = conn.execute(
            "INSERT INTO tickets (title, status, agent_id, inputs) VALUES ('long', 'open', ?, ?)",
            (agent_id, json.dumps(inputs)),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid
    finally:
        conn.close()


NAME = 1000
"""A name within the 1 KiB a ticket's `agent_id` may hold, long past what a line shows."""


def test_a_long_value_in_a_row_is_named_briefly_in_its_error(home: Path) -> None:
    db = home / "tickets.db"
    unknown = insert(db, "a" * NAME, {})  # (a name over 1 KiB is not read: test_big_row_names)
    refused = insert(db, "shell", {"command": ["b" * LONG]})
    swarm(home, "start", "--foreground", "--until-idle", check=True)
    rows = {r["id"]: r for r in query(db, "SELECT id, status, error FROM tickets")}
    assert rows[unknown]["status"] == rows[refused]["status"] == "failed"
    assert rows[unknown]["error"].startswith("unknown agent 'aaaa")
    assert f"… ({NAME:,} characters) (see 'swarm-engine agent list')" in rows[unknown]["error"]
    assert "is not of type 'string'" in rows[refused]["error"]
    assert "… (100,004 characters)" in rows[refused]["error"]  # ['b…b'] as jsonschema names it
    notes = query(db, "SELECT max(length(note)) n FROM ticket_events WHERE note IS NOT NULL")
    for row in rows.values():
        assert len(row["error"]) < 500, row["error"][:300]
    assert notes[0]["n"] < 500
