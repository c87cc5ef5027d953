"""`Database.wait_at_most`: an engine being stopped caps how long its calls wait for a
lock another client holds (SQLite: the connection's busy timeout; PostgreSQL: its
lock_timeout), then restores it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from swarm_engine.errors import StoreBusyError
from swarm_engine.store.sqlite import connect


def test_a_capped_call_does_not_wait_out_the_busy_timeout(tmp_path: Path) -> None:
    db = connect(tmp_path / "t.db", "tickets", busy_timeout=3600)  # an hour: never waited
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        db.wait_at_most(0)
        with pytest.raises(StoreBusyError), db.transaction():
            pass
        assert db.one("PRAGMA busy_timeout")[0] == 0  # type: ignore[index]
        db.wait_at_most(7200)  # never longer than the busy timeout
        assert db.one("PRAGMA busy_timeout")[0] == 3_600_000  # type: ignore[index]
        db.wait_at_most(0.25)
        assert db.one("PRAGMA busy_timeout")[0] == 250  # type: ignore[index]
        db.wait_at_most(None)
        assert db.one("PRAGMA busy_timeout")[0] == 3_600_000  # type: ignore[index]
    finally:
        other.execute("ROLLBACK")
        other.close()
        db.close()


def test_a_capped_call_on_postgresql_does_not_wait_out_the_lock_timeout(pg_url: str) -> None:
    import psycopg

    from swarm_engine.store.postgres import connect as pg_connect

    db = pg_connect(pg_url, "tickets", busy_timeout=3600)  # an hour: never waited
    other = psycopg.connect(pg_url)
    other.execute("LOCK TABLE engines IN ACCESS EXCLUSIVE MODE")  # held until rollback
    insert = "INSERT INTO engines (id, kind, host, pid, max_vms, backend) VALUES ('e', 'daemon', 'h', 1, 1, 'process')"
    try:
        db.wait_at_most(0)  # 0 is no limit to PostgreSQL: the cap is its least, 1 ms
        with pytest.raises(StoreBusyError):
            db.run(insert)
        with pytest.raises(StoreBusyError), db.transaction():
            db.run(insert)
        assert db.one("SHOW lock_timeout")[0] == "1ms"  # type: ignore[index]
        db.wait_at_most(7200)  # never longer than the busy timeout
        assert db.one("SHOW lock_timeout")[0] == "1h"  # type: ignore[index]
        db.wait_at_most(0.25)
        assert db.one("SHOW lock_timeout")[0] == "250ms"  # type: ignore[index]
        db.wait_at_most(None)
        assert db.one("SHOW lock_timeout")[0] == "1h"  # type: ignore[index]
    finally:
        other.rollback()
        other.close()
        db.close()
