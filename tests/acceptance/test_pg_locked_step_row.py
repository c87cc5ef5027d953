"""PostgreSQL: a client holding one running ticket's step row locked delays only that
ticket's writes. The engine's other tickets keep their leases: the write that waits for
the row gives way (a short lock wait, then tried again) to the lease renewals queued
behind it on the engine's one store thread. Real engine, real server, real `psql`-like
client holding the row; the lease shorter than the busy timeout, as in the field."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from tests.acceptance.conftest import write_agent
from tests.support.cli import end_engine, start_engine, swarm_inproc, wait_until
from tests.support.postgres import pg_query

LEASE = 3.0
SHORT = {
    "SWARM_LEASE_TTL": str(LEASE),
    "SWARM_HEARTBEAT_INTERVAL": "0.5",
    "SWARM_POLL_INTERVAL": "0.5",
    "SWARM_BUSY_TIMEOUT": "10",  # far past the lease: a write waiting this long lost all
}


@pytest.fixture
def engine_env(pg_url: str, tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    home = tmp_path / "home"
    env = {"SWARM_DATABASE_URL": pg_url, **SHORT}
    assert swarm_inproc(home, "status", "--init", **env).returncode == 0
    yield home, env


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
