"""A run its own engine stops because the ticket's lease ran out by the engine's clock
(no renewal taken in time: here, another client holds the ticket's row locked, so each
renewal passes over it) is recorded as such, not as a ticket lost to another writer: the
ticket was still this attempt's, and is re-queued only once its lease is reclaimed.
Real PostgreSQL server, real engine."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.acceptance.conftest import nap_ticket
from tests.integration.test_pg_idle_transaction import hold_rows
from tests.support.cli import start_engine, wait_until
from tests.support.postgres import pg_query

SHORT = {"SWARM_LEASE_TTL": "3", "SWARM_HEARTBEAT_INTERVAL": "1", "SWARM_POLL_INTERVAL": "0.5"}


def test_a_lease_run_out_on_the_engines_clock_is_recorded_as_such(
    pg_url: str, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    home = tmp_path / "home"
    env = {"SWARM_DATABASE_URL": pg_url, **SHORT}
    nap_ticket(home, tmp_path, **env)
    engines.append(start_engine(home, "--max-vms", "1", **env))
    wait_until(
        lambda: pg_query(pg_url, "SELECT 1 FROM step_executions WHERE status = 'running'"),
        30,
        "the step to run",
    )
    client = hold_rows(pg_url, [1])
    try:
        closed = wait_until(
            lambda: pg_query(
                pg_url, "SELECT status, error FROM workflow_runs WHERE status <> 'running'"
            ),
            30,
            "the engine to stop the run whose lease it could not renew",
        )
        held = pg_query(pg_url, "SELECT status, attempts FROM tickets WHERE id = 1")
    finally:
        client.rollback()
        client.close()
    assert closed[0]["status"] == "failed", closed
    assert closed[0]["error"].startswith("stopped: its lease ran out without a renewal"), closed
    assert "lost the ticket" not in closed[0]["error"]
    assert held == [{"status": "running", "attempts": 1}], held  # still this attempt's
