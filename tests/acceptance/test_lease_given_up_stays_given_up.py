"""A lease its engine gave up by its own clock is not renewed by a renewal that reaches
the store later (tester h-196): another client held the store's write lock past the lease,
the engine stopped the run, and the renewal that had been waiting for the lock all along
then extended the lease, so the ticket sat `running` with nobody running it for one more
lease before anyone could re-queue it. Real SQLite store, real engine."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from datetime import datetime, timedelta
from pathlib import Path

from tests.acceptance.conftest import nap_ticket
from tests.support.cli import query, start_engine, wait_until

TTL = 3.0
SHORT = {
    "SWARM_LEASE_TTL": f"{TTL:g}",
    "SWARM_HEARTBEAT_INTERVAL": "1",
    "SWARM_POLL_INTERVAL": "0.5",
}
GAVE_UP = "lease ran out after"
NOW = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"


def test_a_renewal_that_waited_for_the_lock_does_not_renew_a_lease_given_up(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    nap_ticket(home, tmp_path)
    # the default busy timeout (10 s) lets a renewal wait inside BEGIN IMMEDIATE for the
    # whole time the lock is held: it was queued while the engine still held the lease
    engine = start_engine(home, "--max-vms", "1", **SHORT)
    engines.append(engine)
    lines: list[str] = []
    said = threading.Event()

    def read() -> None:
        assert engine.stdout is not None
        for line in engine.stdout:
            lines.append(line)
            if GAVE_UP in line:
                said.set()

    threading.Thread(target=read, daemon=True).start()
    wait_until(
        lambda: query(db, "SELECT 1 FROM step_executions WHERE status = 'running'"),
        30,
        "the step to run",
    )
    lock = sqlite3.connect(db, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        [(locked,)] = lock.execute(f"SELECT {NOW}").fetchall()
        assert said.wait(30), "".join(lines[-20:])  # the engine gave the lease up
        lock.execute("COMMIT")
    finally:
        lock.close()
    [seen] = wait_until(
        lambda: query(
            db,
            "SELECT t.status, t.attempts, t.lease_expires_at FROM tickets t"
            " WHERE t.id = 1 AND EXISTS (SELECT 1 FROM workflow_runs r"
            " WHERE r.ticket_id = 1 AND r.attempt_id IS NOT NULL AND r.status <> 'running')",
        ),
        30,
        "the engine to record the run it stopped",
    )
    if seen["attempts"] == 1 and seen["status"] in ("claimed", "running"):
        # still the first attempt's: its lease is the one renewed before the lock was
        # taken (a renewal after it was let go ends one lease_ttl after that, past this)
        lease = datetime.fromisoformat(seen["lease_expires_at"])
        assert lease <= datetime.fromisoformat(locked) + timedelta(seconds=TTL), (seen, locked)
    # and the ticket is re-queued and run again without waiting out another lease
    wait_until(
        lambda: query(db, "SELECT 1 FROM tickets WHERE id = 1 AND attempts = 2"),
        30,
        "the ticket to be claimed again",
    )
