"""`Database.wait_at_most`: an engine being stopped caps how long its calls wait for a
lock another client holds (SQLite: the connection's busy timeout), then restores it."""

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
