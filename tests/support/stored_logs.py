"""Stored step logs written as any SQLite client may write them, for the tests of what
reads them back (the CLI's `logs`, the API's downloads and live streams)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def failed_ticket(db: Path, steps: int) -> sqlite3.Connection:
    """Ticket 100 (failed), its run 1 and `steps` failed steps (ids 1..., step ids `s1`...),
    written in one open transaction of the connection returned: the caller adds the logs
    it wants, then commits and closes it (`with conn:` ... `conn.close()`)."""
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO tickets (id, title, status, agent_id, error, attempt_id)"
        " VALUES (100, 't', 'failed', 'echo', 'no', 'a1')"
    )
    conn.execute(
        "INSERT INTO workflow_runs (id, ticket_id, attempt, attempt_id, execution_mode,"
        " status) VALUES (1, 100, 1, 'a1', 'workflow', 'failed')"
    )
    for sid in range(1, steps + 1):
        conn.execute(
            "INSERT INTO step_executions (id, run_id, step_id, agent_name, agent_version,"
            " agent_kind, status, error) VALUES (?, 1, ?, 'echo', '1', 'echo', 'failed', ?)",
            (sid, f"s{sid}", f"step {sid} failed"),
        )
    return conn
