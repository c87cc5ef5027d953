"""PostgreSQL ending every connection of the engine's database, again and again
(`pg_terminate_backend`, as an administrator or a connection pooler's reset does), while
tickets run: a delay, never a lost lease. Each ended connection is found broken as the
engine takes it from its pool and a new one is used at once; the pool's own check slept
1, 2 then 4 s between broken connections, so with every one ended a lease renewal
waited past its lease and a running ticket was run again (tester h-196)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.acceptance.conftest import stop
from tests.support.cli import start_engine, swarm_inproc, wait_until
from tests.support.postgres import Server, pg_query

LEASE = {"SWARM_LEASE_TTL": "8", "SWARM_HEARTBEAT_INTERVAL": "0.5", "SWARM_POLL_INTERVAL": "0.5"}
TICKETS = 40
KILLS = 10


def test_connections_ended_again_and_again_cost_no_lease(
    postgres: Server, pg_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = {"SWARM_DATABASE_URL": pg_url, **LEASE}
    assert swarm_inproc(home, "status", "--init", SWARM_DATABASE_URL=pg_url).returncode == 0
    engines: list[subprocess.Popen[str]] = [
        start_engine(home, "--another", "--max-vms", "2", **env) for _ in range(2)
    ]
    try:
        wait_until(
            lambda: len(pg_query(pg_url, "SELECT id FROM engines WHERE state = 'running'")) == 2,
            60,
            "both engines to register",
        )
        import psycopg

        with psycopg.connect(pg_url, autocommit=True) as conn:
            for i in range(TICKETS):
                conn.execute(
                    "INSERT INTO tickets (title, status, agent_id, inputs)"
                    " VALUES (%s, 'open', 'shell', %s)",
                    (f"t{i}", json.dumps({"command": f"sleep {i % 3}"})),
                )
        database = pg_url.rsplit("/", 1)[1].split("?")[0]
        for _ in range(KILLS):  # every connection of the engines' database, every 2 s
            pg_query(
                postgres.url(),
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname ="
                " %(db)s AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                {"db": database},
            )
            time.sleep(2)  # sleep-ok: the pace of the kills, not a wait for a result
        ended = "SELECT count(*) AS n FROM tickets WHERE status IN ('done', 'failed')"
        wait_until(lambda: pg_query(pg_url, ended)[0]["n"] == TICKETS, 120, "every ticket")
        rows = pg_query(pg_url, "SELECT status, attempts, count(*) AS n FROM tickets GROUP BY 1, 2")
        assert [(r["status"], r["attempts"], r["n"]) for r in rows] == [("done", 1, TICKETS)]
        runs = pg_query(pg_url, "SELECT count(*) AS n FROM workflow_runs")
        assert runs[0]["n"] == TICKETS, runs  # each ran once
    finally:
        outs = [stop(e) for e in engines]
    for out in outs:
        assert "lease ran out" not in out and "Traceback" not in out, out
