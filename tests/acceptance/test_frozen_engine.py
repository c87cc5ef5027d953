"""An engine frozen mid-run (SIGSTOP: a hung host, a debugger, a VM paused) stops
renewing its leases; another engine of the same host re-runs its tickets, and stops the
frozen engine's sandboxes first, so the two runs never overlap on that host."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from datetime import datetime
from pathlib import Path

from tests.acceptance.conftest import engine_ready, status_of, stop, write_agent
from tests.support.cli import query, start_engine, swarm_inproc, wait_until

from swarm_engine.vm.proctree import tagged

LEASE = {
    "SWARM_HEARTBEAT_INTERVAL": "0.3",
    "SWARM_POLL_INTERVAL": "0.5",
    "SWARM_LEASE_TTL": "2",
}
BEATS = 80
"""Each attempt writes the time into its workspace this many times, 0.1 s apart."""


def epoch(stored: str) -> float:
    """A timestamp as the store writes it (`2026-11-24T03:25:52.123Z`), in epoch seconds."""
    return datetime.fromisoformat(stored.replace("Z", "+00:00")).timestamp()


def test_a_frozen_engines_sandbox_is_stopped_before_its_ticket_runs_again(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    write_agent(
        tmp_path / "beat",
        "name: beat\nkind: shell\ntimeout_seconds: 120\n"
        f"command: for i in $(seq {BEATS}); do date +%s.%N >> beats; sleep 0.1; done; echo ok\n",
    )
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "beat")).returncode == 0
    frozen = start_engine(home, "--max-vms", "1", **LEASE, SWARM_LOG_LEVEL="INFO")
    engines.append(frozen)
    engine_ready(home, frozen)
    assert swarm_inproc(home, "ticket", "create", "--title", "b", "--agent", "beat").returncode == 0
    first = wait_until(
        lambda: query(db, "SELECT * FROM step_executions WHERE status = 'running'"), 30, "a step"
    )[0]
    (vm,) = query(db, "SELECT * FROM vms WHERE id = ?", first["vm_id"])
    beats = Path(vm["workspace"]) / "beats"
    sandbox = wait_until(lambda: beats.is_file() and tagged(vm["id"]), 30, "the sandbox to beat")
    rescuer = start_engine(home, "--max-vms", "1", "--another", **LEASE)
    engines.append(rescuer)
    engine_ready(home, rescuer)

    os.kill(frozen.pid, signal.SIGSTOP)  # the engine alone: its sandbox runs on
    try:
        later = "SELECT * FROM step_executions WHERE id > ? AND status = 'running'"
        again = wait_until(
            lambda: query(db, later, first["id"]), 60, "the other engine to run the ticket again"
        )[0]
        (second,) = query(db, "SELECT * FROM workflow_runs WHERE id = ?", again["run_id"])
        (vm2,) = query(db, "SELECT * FROM vms WHERE id = ?", again["vm_id"])
        beats2 = Path(vm2["workspace"]) / "beats"
        wait_until(
            lambda: beats2.is_file() and len(beats2.read_text().split()) >= 10,
            60,
            "the second run to beat ten times",
        )
        # the frozen engine's sandbox was stopped before the second run began: no process
        # carries its VM's tag any more, and its last beat came before that run's start
        # (a sandbox still running would have beaten ten times since)
        assert tagged(vm["id"]) == [], sandbox
        last = float(beats.read_text().split()[-1])
        assert last < epoch(second["started_at"]), (last, second)
        assert len(beats.read_text().split()) < BEATS  # it was cut short
    finally:
        os.kill(frozen.pid, signal.SIGCONT)

    # the frozen engine wakes up, finds its ticket gone, and abandons its run
    wait_until(lambda: status_of(home, 1) == "done", 60, "the second run to finish")
    runs = query(db, "SELECT status, error, engine_id FROM workflow_runs ORDER BY id")
    assert [r["status"] for r in runs] == ["failed", "done"], runs
    assert "lease expired" in runs[0]["error"]
    (ticket,) = query(db, "SELECT attempts, result FROM tickets")
    assert ticket["attempts"] == 2 and "ok" in ticket["result"]
    wait_until(
        lambda: query(
            db, "SELECT 1 FROM vms WHERE id = ? AND state IN ('destroyed', 'failed')", vm["id"]
        ),
        30,
        "the frozen engine to destroy its VM once awake",
    )
    assert frozen.poll() is None and rescuer.poll() is None
    woke, rescued = stop(frozen), stop(rescuer)
    assert frozen.returncode == 0 and rescuer.returncode == 0, (woke, rescued)
    assert "Traceback" not in woke + rescued, (woke, rescued)
    assert f"stopped VM {vm['id']}" in rescued, rescued
    # the frozen engine did not end the ticket: it never logs the status another wrote
    assert "claimed ticket 1" in woke, woke
    assert not re.search(r"ticket 1 (done|running|open|failed)\b", woke), woke
