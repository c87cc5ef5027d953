"""A statement whose PostgreSQL connection the server ends under it (`pg_terminate_backend`,
a restart): a read is run once more on another connection and answers; a write fails as
busy (whether it was committed before the end is unknown), never run twice (tester
h-198: `ticket list` failed while only its connection was ended)."""

from __future__ import annotations

import threading

import pytest
from tests.support.postgres import Server, pg_query

from swarm_engine.errors import StoreBusyError
from swarm_engine.store import Store


def end_sleepers(postgres: Server, database: str) -> threading.Thread:
    """In the background: wait until a `pg_sleep` of `database` runs, then end its
    connection."""

    def end() -> None:
        running = (
            "SELECT pid FROM pg_stat_activity WHERE datname = %(db)s AND state = 'active'"
            " AND query LIKE '%%pg_sleep%%' AND pid <> pg_backend_pid()"
        )
        for _ in range(2000):
            pids = pg_query(postgres.url(), running, {"db": database})
            if pids:
                for row in pids:
                    pg_query(
                        postgres.url(), "SELECT pg_terminate_backend(%(p)s)", {"p": row["pid"]}
                    )
                return
        raise AssertionError("no pg_sleep ever ran")

    thread = threading.Thread(target=end)
    thread.start()
    return thread


def test_a_read_whose_connection_is_ended_is_read_again(
    postgres: Server, pg_url: str, pg_store: Store
) -> None:
    database = pg_url.rsplit("/", 1)[1].split("?")[0]
    ender = end_sleepers(postgres, database)
    rows = pg_store.db.all("SELECT 7 AS n FROM pg_sleep(0.5) UNION ALL SELECT 8")  # ended once
    ender.join()
    assert sorted(r["n"] for r in rows) == [7, 8]


def test_a_write_whose_connection_is_ended_is_not_run_again(
    postgres: Server, pg_url: str, pg_store: Store
) -> None:
    database = pg_url.rsplit("/", 1)[1].split("?")[0]
    ender = end_sleepers(postgres, database)
    with pytest.raises(StoreBusyError, match="unavailable for now"):
        pg_store.db.run(
            "INSERT INTO engines (id, kind, host, pid, max_vms, backend)"
            " SELECT 'e', 'daemon', 'h', 1, 1, 'process' FROM pg_sleep(0.5)"
        )
    ender.join()
    assert pg_query(pg_url, "SELECT count(*) AS n FROM engines")[0]["n"] == 0
