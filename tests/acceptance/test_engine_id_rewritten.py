"""Another client rewrites `engine_id` on a ticket an engine is running (tester h-196):
the attempt is still that engine's (its `attempt_id`, the fencing token, says so), so
its next lease renewal writes its own id back; before, the row kept naming the other
engine to the end, and a reclaim of the ticket would look for the attempt's VMs, and
name the engine that did not renew it, by that wrong id. Real SQLite store, real
engine."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

from tests.acceptance.conftest import nap_ticket
from tests.support.cli import query, start_engine, wait_until

SHORT = {"SWARM_LEASE_TTL": "3", "SWARM_HEARTBEAT_INTERVAL": "0.5", "SWARM_POLL_INTERVAL": "0.5"}


def test_the_holding_engine_writes_its_id_back_at_the_next_renewal(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    nap_ticket(home, tmp_path)
    engines.append(start_engine(home, "--max-vms", "1", **SHORT))
    wait_until(
        lambda: query(db, "SELECT 1 FROM step_executions WHERE status = 'running'"),
        30,
        "the step to run",
    )
    [engine] = query(db, "SELECT id FROM engines")
    [before] = query(db, "SELECT engine_id, attempt_id FROM tickets WHERE id = 1")
    assert before["engine_id"] == engine["id"]
    with sqlite3.connect(db) as conn:  # another client's write
        conn.execute("UPDATE tickets SET engine_id = 'someone-else' WHERE id = 1")
    conn.close()
    wait_until(
        lambda: query(db, "SELECT 1 FROM tickets WHERE id = 1 AND engine_id = ?", engine["id"]),
        30,
        "the engine to write its id back",
    )
    # the same attempt, still running: nothing else was changed
    [after] = query(db, "SELECT status, attempt_id, attempts FROM tickets WHERE id = 1")
    assert after == {"status": "running", "attempt_id": before["attempt_id"], "attempts": 1}
