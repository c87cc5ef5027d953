"""A busy store is a delay, not a failure: locks held by other writers, long runs, and a
lease that really runs out. Every ticket is executed exactly once at a time."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

from tests.acceptance.conftest import engine_ready, status_of, stop, write_agent
from tests.support.cli import query, start_engine, swarm, swarm_inproc, wait_until, write_lock

# the busy timeout is short so that a lock "twice the busy timeout" is quick to hold
BUSY = {
    "SWARM_BUSY_TIMEOUT": "0.4",
    "SWARM_HEARTBEAT_INTERVAL": "0.3",
    "SWARM_LEASE_TTL": "3",
    "SWARM_POLL_INTERVAL": "0.5",
}


def sleeper(home: Path, tmp_path: Path, seconds: float) -> None:
    write_agent(
        tmp_path / "nap",
        f"name: nap\nkind: shell\ncommand: sleep {seconds}; echo rested\ntimeout_seconds: 60\n",
    )
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "nap")).returncode == 0
    assert swarm_inproc(home, "ticket", "create", "--title", "n", "--agent", "nap").returncode == 0


def running_step(db: Path) -> dict[str, object]:
    return wait_until(
        lambda: query(db, "SELECT * FROM step_executions WHERE status = 'running'"),
        30,
        "the step to start",
    )[0]


def test_a_lock_held_past_the_busy_timeout_delays_the_run_and_aborts_nothing(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    sleeper(home, tmp_path, 0.3)
    proc = start_engine(home, "--max-vms", "2", **BUSY)
    engines.append(proc)
    engine_ready(home, proc)
    assert swarm_inproc(home, "run-ticket", "1").returncode == 0  # already open: a no-op
    running_step(db)
    with write_lock(db):
        # three busy timeouts: renewals, the step's end and the run's end all wait
        time.sleep(1.2)  # sleep-ok: holding the lock is the fault under test
        assert proc.poll() is None
        assert status_of(home, 1) == "running"  # a read: WAL readers never wait
    wait_until(lambda: status_of(home, 1) == "done", 30, "the ticket to finish")
    (ticket,) = query(db, "SELECT attempts, result FROM tickets")
    assert ticket["attempts"] == 1 and "rested" in ticket["result"]
    runs = query(db, "SELECT status FROM workflow_runs")
    assert [r["status"] for r in runs] == ["done"]
    assert proc.poll() is None, "the engine must stay up"
    out = stop(proc)
    assert proc.returncode == 0, out
    assert "store busy" in out or "busy" in out  # it said why it waited
    assert "Traceback" not in out


def test_a_run_longer_than_three_leases_keeps_its_lease_with_two_engines(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    sleeper(home, tmp_path, 3.5)  # > 3 x lease_ttl below
    env = dict(BUSY, SWARM_LEASE_TTL="1")
    first = start_engine(home, "--max-vms", "1", **env)
    engines.append(first)
    engine_ready(home, first)
    running_step(db)
    second = start_engine(home, "--max-vms", "1", "--another", **env)  # would reclaim a lease
    engines.append(second)
    engine_ready(home, second)
    wait_until(lambda: status_of(home, 1) == "done", 30, "the long ticket to finish")
    assert query(db, "SELECT attempts FROM tickets")[0]["attempts"] == 1
    assert [r["status"] for r in query(db, "SELECT status FROM workflow_runs")] == ["done"]
    for proc in (first, second):
        assert stop(proc) is not None and proc.returncode == 0


def test_a_lease_that_really_runs_out_stops_the_run_before_anyone_else_starts_it(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    sleeper(home, tmp_path, 1.5)
    env = dict(BUSY, SWARM_LEASE_TTL="1.2", SWARM_BUSY_TIMEOUT="0.2")
    proc = start_engine(home, "--max-vms", "1", **env)
    engines.append(proc)
    engine_ready(home, proc)
    first_step = running_step(db)
    with write_lock(db):
        time.sleep(2.5)  # sleep-ok: longer than the lease: it must be given up
    wait_until(lambda: status_of(home, 1) == "done", 30, "the ticket to be re-run")
    runs = query(db, "SELECT * FROM workflow_runs ORDER BY id")
    assert [r["status"] for r in runs] == ["failed", "done"], runs
    assert "lease" in runs[0]["error"]
    (ticket,) = query(db, "SELECT attempts FROM tickets")
    assert ticket["attempts"] == 2
    # the first attempt's VM was destroyed by its own engine, and nothing of it ran on
    # after the second attempt began
    (vm,) = query(db, "SELECT * FROM vms WHERE id = ?", first_step["vm_id"])
    assert vm["state"] in ("destroyed", "failed")
    steps = query(db, "SELECT * FROM step_executions ORDER BY id")
    assert steps[0]["status"] in ("failed", "cancelled") and steps[-1]["status"] == "done"
    assert vm["destroyed_at"] <= steps[-1]["started_at"]
    assert proc.poll() is None
    out = stop(proc)
    assert proc.returncode == 0 and "Traceback" not in out, out


def test_heartbeat_must_be_well_below_the_lease(home: Path) -> None:
    refused = swarm(home, "start", "--foreground", SWARM_HEARTBEAT_INTERVAL="20")
    assert refused.returncode == 5
    assert refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1
    assert "heartbeat_interval (20s) must be at most 1/3 of lease_ttl (30s)" in refused.stderr
    assert query(home / "tickets.db", "SELECT * FROM engines") == []


def test_an_idle_engine_writes_only_its_heartbeat(
    home: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    assert swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "echo").returncode == 0
    proc = start_engine(home, "--max-vms", "1", **BUSY)
    engines.append(proc)
    engine_ready(home, proc)
    wait_until(lambda: status_of(home, 1) == "done", 30, "the ticket to run")

    def dump() -> list[str]:
        conn = sqlite3.connect(db, timeout=30)
        try:
            return [
                line for line in conn.iterdump() if not line.startswith('INSERT INTO "engines"')
            ]
        finally:
            conn.close()

    def heartbeat() -> str:
        return str(
            query(db, "SELECT heartbeat_at FROM engines WHERE pid = ?", proc.pid)[0]["heartbeat_at"]
        )

    wait_until(
        lambda: query(db, "SELECT 1 FROM vms WHERE state IN ('booting','ready','busy')") == [],
        10,
        "idle",
    )
    before, beat = dump(), heartbeat()
    for _ in range(3):  # three heartbeats later...
        last = heartbeat()
        wait_until(lambda last=last: heartbeat() != last, 10, "a heartbeat")  # type: ignore[misc]
    assert heartbeat() != beat
    assert dump() == before  # ...nothing but the engine row changed
    stop(proc)


def test_an_outside_commit_wakes_an_idle_engine_without_the_poll(
    home: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """The fallback poll is a minute here and the heartbeat ten seconds, so only the
    wake-up can start these tickets within the wait: each is inserted after the engine
    has been idle (a file event may arrive before its commit is visible; the settle
    window must still catch the commit)."""
    db = home / "tickets.db"
    proc = start_engine(
        home,
        "--max-vms",
        "2",
        SWARM_POLL_INTERVAL="60",
        SWARM_HEARTBEAT_INTERVAL="10",
        SWARM_LEASE_TTL="60",
    )
    engines.append(proc)
    engine_ready(home, proc)
    conn = sqlite3.connect(db, timeout=30)
    try:
        for i in range(6):
            time.sleep(0.3)  # sleep-ok: the idle gap before an outside insert is the input
            tid = conn.execute(
                "INSERT INTO tickets (title, status, agent_id) VALUES (?, 'open', 'echo')",
                (f"idle {i}",),
            ).lastrowid
            conn.commit()
            wait_until(lambda tid=tid: status_of(home, tid) == "done", 20, f"ticket {tid}")
    finally:
        conn.close()
    stop(proc)
