"""PostgreSQL: a row another client holds locked costs only its own ticket, with a lease
shorter than the busy timeout, as in the field. A running ticket's step row held: only
that ticket's writes wait (a short lock wait, then tried again), the lease renewals
queued behind them on the engine's one store thread go first, and the engine's other
tickets keep their leases. An expired ticket's run row held: a new engine's start-up
reclaim leaves that ticket for a later round and the engine runs the open tickets. Real
engine, real server, a real client holding the row."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from tests.acceptance.conftest import pg_home, write_agent
from tests.support.cli import end_engine, start_engine, swarm_inproc, wait_until
from tests.support.postgres import pg_query, psql

LEASE = 3.0
SHORT = {
    "SWARM_LEASE_TTL": str(LEASE),
    "SWARM_HEARTBEAT_INTERVAL": "0.5",
    "SWARM_POLL_INTERVAL": "0.5",
    "SWARM_BUSY_TIMEOUT": "10",  # far past the lease: a write waiting this long lost all
}


@pytest.fixture
def engine_env(pg_url: str, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    return pg_home(pg_url, tmp_path, SHORT)


def nap(home: Path, env: dict[str, str], folder: Path, name: str, seconds: float) -> None:
    write_agent(
        folder,
        f"name: {name}\nkind: shell\ncommand: sleep {seconds}; echo rested\ntimeout_seconds: 120\n",
    )
    assert swarm_inproc(home, "agent", "register", str(folder), **env).returncode == 0


def test_a_step_row_locked_elsewhere_costs_the_other_tickets_nothing(
    pg_url: str, engine_env: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    home, env = engine_env
    nap(home, env, tmp_path / "short", "short", 1)
    nap(home, env, tmp_path / "long", "long", 20)
    for agent in ("short", "long", "long"):
        made = swarm_inproc(home, "ticket", "create", "--title", agent, "--agent", agent, **env)
        assert made.returncode == 0, made.stderr
    proc: subprocess.Popen[str] = start_engine(home, "--max-vms", "3", **env)
    try:
        wait_until(
            lambda: (
                pg_query(
                    pg_url, "SELECT count(*) AS n FROM step_executions WHERE status = 'running'"
                )[0]["n"]
                == 3
            ),
            60,
            "the three steps to run",
        )
        client = psycopg.connect(pg_url)
        try:
            held = client.execute(
                "SELECT s.id FROM step_executions s JOIN workflow_runs r ON r.id = s.run_id"
                " WHERE r.ticket_id = 1 FOR UPDATE"
            ).fetchall()
            assert len(held) == 1
            # the short step ends and its engine's write of that waits for the row
            wait_until(
                lambda: (
                    pg_query(
                        pg_url,
                        "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                    )[0]["n"]
                    > 0
                ),
                60,
                "the engine's write to wait for the held row",
            )
            time.sleep(2 * LEASE)  # sleep-ok: holding the row for two leases is the fault
            assert proc.poll() is None
        finally:
            client.rollback()
            client.close()
        wait_until(
            lambda: (
                pg_query(pg_url, "SELECT count(*) AS n FROM tickets WHERE status = 'done'")[0]["n"]
                == 3
            ),
            120,
            "every ticket to finish",
        )
        # each ticket ran once: none lost its lease (a lost one runs again, attempt 2)
        tickets = pg_query(pg_url, "SELECT id, attempts FROM tickets ORDER BY id")
        assert [(t["id"], t["attempts"]) for t in tickets] == [(1, 1), (2, 1), (3, 1)]
        runs = pg_query(pg_url, "SELECT ticket_id, status FROM workflow_runs ORDER BY id")
        assert [(r["ticket_id"], r["status"]) for r in runs] == [
            (1, "done"),
            (2, "done"),
            (3, "done"),
        ]
    finally:
        end_engine(proc)


def test_a_new_engine_claims_the_open_tickets_while_an_expired_ones_run_row_is_held(
    pg_url: str, engine_env: tuple[Path, dict[str, str]]
) -> None:
    """A hand-written expired ticket whose running run a client holds locked: a new
    engine's start-up reclaim leaves that ticket for a later round and the engine runs
    the open tickets meanwhile (before: its start-up reclaim failed busy, retried for as
    long as the row was held, and nothing was claimed); once the row is let go, the
    expired ticket is re-queued and run too."""
    home, env = engine_env
    psql(
        pg_url,
        "INSERT INTO engines (id, host, pid, max_vms, backend, state, heartbeat_at)"
        " VALUES ('ghost', 'elsewhere', 1, 1, 'process', 'running', now() - interval '5 minutes');"
        " INSERT INTO tickets (title, status, agent_id, attempts, attempt_id, engine_id,"
        " lease_expires_at) VALUES ('ghost', 'running', 'echo', 1, 'att-ghost', 'ghost',"
        " now() - interval '1 minute');"
        " INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, engine_id, execution_mode)"
        " VALUES (1, 1, 'att-ghost', 'ghost', 'single')",
    )
    for i in range(3):
        made = swarm_inproc(home, "ticket", "create", "--title", f"t{i}", "--agent", "echo", **env)
        assert made.returncode == 0, made.stderr
    client = psycopg.connect(pg_url)
    proc: subprocess.Popen[str] | None = None
    try:
        assert client.execute(
            "SELECT id FROM workflow_runs WHERE attempt_id = 'att-ghost' FOR UPDATE"
        ).fetchall()
        proc = start_engine(home, "--max-vms", "3", **env)
        wait_until(
            lambda: (
                pg_query(
                    pg_url, "SELECT count(*) AS n FROM tickets WHERE id > 1 AND status = 'done'"
                )[0]["n"]
                == 3
            ),
            60,
            "the open tickets to be run while the row is held",
        )
        ghost = pg_query(pg_url, "SELECT status, attempts FROM tickets WHERE id = 1")
        assert ghost == [{"status": "running", "attempts": 1}]  # left as it was, whole
        client.rollback()
        wait_until(
            lambda: (
                pg_query(pg_url, "SELECT status FROM tickets WHERE id = 1")[0]["status"] == "done"
            ),
            60,
            "the expired ticket to be re-queued and run once the row is let go",
        )
        runs = pg_query(pg_url, "SELECT status FROM workflow_runs WHERE ticket_id = 1 ORDER BY id")
        assert [r["status"] for r in runs] == ["failed", "done"]
    finally:
        client.close()
        if proc is not None:
            end_engine(proc)
