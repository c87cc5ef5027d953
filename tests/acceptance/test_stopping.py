"""Stopping an engine: the second stop aborts, and what it aborts is re-queued, or said to
be left to the lease reclaim when the store stays busy until the leases run out."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.acceptance.conftest import engine_ready, status_of, write_agent
from tests.support.cli import query, start_engine, swarm_inproc, wait_until

BUSY = {
    "SWARM_BUSY_TIMEOUT": "0.2",
    "SWARM_HEARTBEAT_INTERVAL": "0.3",
    "SWARM_POLL_INTERVAL": "0.5",
}


@contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """Hold the database's write lock, as a long transaction of another client would."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("COMMIT")
        conn.close()


def long_ticket(home: Path, tmp_path: Path) -> None:
    write_agent(tmp_path / "long", "name: long\nkind: shell\ncommand: sleep 300\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "long")).returncode == 0
    assert swarm_inproc(home, "ticket", "create", "--title", "l", "--agent", "long").returncode == 0


def draining(home: Path, proc: subprocess.Popen[str]) -> None:
    """Send the first stop and wait until the engine records that it drains."""
    proc.send_signal(signal.SIGTERM)
    sql = "SELECT 1 FROM engines WHERE pid = ? AND state = 'draining'"
    wait_until(lambda: query(home / "tickets.db", sql, proc.pid), 20, "the engine to drain")


def running_engine(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]], **env: str
) -> subprocess.Popen[str]:
    long_ticket(home, tmp_path)
    proc = start_engine(home, "--max-vms", "1", **env)
    engines.append(proc)
    engine_ready(home, proc)
    wait_until(
        lambda: query(
            home / "tickets.db", "SELECT 1 FROM step_executions WHERE status = 'running'"
        ),
        30,
        "the step to run",
    )
    return proc


def test_a_second_stop_while_the_store_is_locked_requeues_once_the_store_answers(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    proc = running_engine(home, tmp_path, engines, **BUSY, SWARM_LEASE_TTL="30")
    draining(home, proc)
    with write_lock(db):
        proc.send_signal(signal.SIGTERM)  # abort, while another writer holds the lock
        time.sleep(1.5)  # sleep-ok: several busy timeouts of the lock are the fault under test
        assert proc.poll() is None, "the engine waits for the store to record the abort"
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    (ticket,) = query(db, "SELECT status, attempts, engine_id FROM tickets")
    assert ticket["status"] == "open" and ticket["attempts"] == 1, (ticket, out)
    (run,) = query(db, "SELECT status, error FROM workflow_runs")
    assert run["status"] == "failed" and run["error"].startswith("aborted"), run
    assert "aborting 1 running ticket" in out
    assert "lease" not in out.lower() and "Traceback" not in out, out


def test_a_second_stop_while_the_store_stays_locked_past_the_lease_names_the_tickets_left(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    proc = running_engine(home, tmp_path, engines, **BUSY, SWARM_LEASE_TTL="2")
    draining(home, proc)
    with write_lock(db):
        proc.send_signal(signal.SIGTERM)  # abort; the lock outlasts the lease
        out, _ = proc.communicate(timeout=60)  # the engine does not wait forever
        assert status_of(home, 1) == "running"  # a read: nothing could be written
    assert proc.returncode == 0, out
    said = [line for line in out.splitlines() if "ticket(s) 1 " in line]
    assert len(said) == 1, out
    assert re.search(r"re-queue", said[0]) and "lease" in said[0], said
    assert "swarm-engine cleanup" in said[0], said
    assert "Traceback" not in out, out

    # as it says: the expired lease is reclaimed by cleanup (or any engine)
    def cleaned() -> bool:
        assert swarm_inproc(home, "cleanup").returncode == 0
        return status_of(home, 1) == "open"

    wait_until(cleaned, 30, "cleanup to re-queue the ticket")
    (run,) = query(db, "SELECT status, error FROM workflow_runs")
    assert run["status"] == "failed" and "lease expired" in run["error"], run
