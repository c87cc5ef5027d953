"""PostgreSQL: rows of a run's close held locked by another client delay those tickets
alone, for as long as they are held, with the tester's timings (`lease_ttl` 6 s,
`heartbeat_interval` 2 s: a lease only three heartbeats long). Each held ticket's close
waits a short while for its row, then is tried again after a backoff; the lease renewals
queued on the engine's one store thread behind those tries still keep every lease, the
held tickets' and the free one's. Once the rows are let go the held tickets end `done`,
each run once. Real engine, real server, a real client holding the rows.

Before: the keeper counted a lease from when its renewal was queued, not from when the
store took it, so a renewal that waited behind the closes' tries (up to a slice each)
ran out by the engine's clock while the store had renewed it, and the ticket was given
up ("lease ran out after 4.5s without a renewal") and run again."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest
from tests.acceptance.conftest import pg_home, write_agent
from tests.support.cli import end_engine, start_engine, swarm_inproc, wait_until
from tests.support.postgres import pg_query

LEASE = 6.0
TIMINGS = {
    "SWARM_LEASE_TTL": str(LEASE),
    "SWARM_HEARTBEAT_INTERVAL": "2",
    "SWARM_POLL_INTERVAL": "0.5",
}
OF_TICKET = "JOIN workflow_runs r ON r.id = s.run_id WHERE r.ticket_id = %s"
HELD = {  # a row of each held ticket's close: its step, its run, its step's VM
    1: f"SELECT s.id FROM step_executions s {OF_TICKET} FOR UPDATE OF s",
    2: "SELECT id FROM workflow_runs WHERE ticket_id = %s FOR UPDATE",
    3: f"SELECT v.id FROM vms v JOIN step_executions s ON s.vm_id = v.id {OF_TICKET}"
    " FOR UPDATE OF v",
    4: f"SELECT s.id FROM step_executions s {OF_TICKET} FOR UPDATE OF s",
}
FREE = 5


@pytest.fixture
def engine_env(pg_url: str, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    return pg_home(pg_url, tmp_path, TIMINGS)


def register(home: Path, env: dict[str, str], folder: Path, name: str, command: str) -> None:
    write_agent(folder, f"name: {name}\nkind: shell\ncommand: {command}\ntimeout_seconds: 300\n")
    assert swarm_inproc(home, "agent", "register", str(folder), **env).returncode == 0


def count(pg_url: str, where: str) -> int:
    return int(pg_query(pg_url, f"SELECT count(*) AS n FROM {where}")[0]["n"])


def test_rows_of_the_close_held_elsewhere_delay_their_tickets_alone(
    pg_url: str, engine_env: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    home, env = engine_env
    # the held tickets' steps end soon after their rows are taken, the free one's later
    register(home, env, tmp_path / "held", "held", "sleep 5; echo rested")
    register(home, env, tmp_path / "free", "free", "sleep 8; echo rested")
    for agent in ["held"] * len(HELD) + ["free"]:
        made = swarm_inproc(home, "ticket", "create", "--title", agent, "--agent", agent, **env)
        assert made.returncode == 0, made.stderr
    proc: subprocess.Popen[str] = start_engine(home, "--max-vms", str(FREE), **env)
    try:
        wait_until(
            lambda: count(pg_url, "step_executions WHERE status = 'running'") == FREE,
            60,
            "every step to run",
        )
        client = psycopg.connect(pg_url)
        try:
            for ticket_id, sql in HELD.items():
                assert len(client.execute(sql, (ticket_id,)).fetchall()) == 1
            # (taken before any held ticket could close: their steps still ran)
            assert count(pg_url, "step_executions WHERE status = 'running'") == FREE
            # the held tickets' steps end, and each close waits for its row
            wait_until(
                lambda: (
                    count(
                        pg_url,
                        "pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database()",
                    )
                    > 0
                ),
                60,
                "an engine's close to wait for a held row",
            )
            since = pg_query(pg_url, "SELECT now() AS t")[0]["t"]
            # held until the store has renewed every held lease past two leases from
            # then (the engine's own renewals: it keeps them), or an engine gives one up
            wait_until(
                lambda: (
                    count(
                        pg_url,
                        f"tickets WHERE id <= {len(HELD)} AND status = 'running'"
                        f" AND lease_expires_at > '{since.isoformat()}'::timestamptz"
                        f" + interval '{3 * LEASE} seconds'",
                    )
                    == len(HELD)
                    or count(pg_url, "workflow_runs WHERE status = 'failed'") > 0
                ),
                120,
                "the held tickets' leases to be renewed past two leases",
            )
            assert proc.poll() is None
            assert count(pg_url, "workflow_runs WHERE status = 'failed'") == 0
            assert count(pg_url, f"tickets WHERE id = {FREE} AND status = 'done'") == 1
        finally:
            client.rollback()
            client.close()
        wait_until(
            lambda: count(pg_url, "tickets WHERE status = 'done'") == FREE,
            60,
            "every ticket to finish once the rows are let go",
        )
        # each ticket ran once: none lost its lease (a lost one runs again, attempt 2)
        tickets = pg_query(pg_url, "SELECT id, attempts FROM tickets ORDER BY id")
        assert [(t["id"], t["attempts"]) for t in tickets] == [(i, 1) for i in range(1, 6)]
        runs = pg_query(pg_url, "SELECT ticket_id, status FROM workflow_runs ORDER BY ticket_id")
        assert [(r["ticket_id"], r["status"]) for r in runs] == [(i, "done") for i in range(1, 6)]
    finally:
        end_engine(proc)
