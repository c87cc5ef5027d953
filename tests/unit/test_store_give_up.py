"""`Database.give_up_when` (SQLite): a call waiting for a lock another client holds waits
on while told to, and gives up once told, whatever its busy timeout (a server that stops
cannot cancel the thread that waits: `api/deps.py`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from swarm_engine.errors import StoreBusyError
from swarm_engine.store.sqlite import connect


def test_a_write_waiting_for_the_lock_gives_up_when_told(tmp_path: Path) -> None:
    db = connect(tmp_path / "t.db", "tickets", busy_timeout=3600, give_up=lambda: True)
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusyError, match="is busy"), db.transaction():
            pass  # (an hour's busy timeout: not waited out)
        assert db.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 3_600_000
    finally:
        other.execute("ROLLBACK")
        other.close()
        db.close()


def test_a_call_told_to_wait_on_gets_the_lock_once_it_is_free(tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None, check_same_thread=False)
    asked: list[int] = []

    def give_up() -> bool:  # asked after each slice of the wait: the lock is let go
        asked.append(1)  # after the second
        if len(asked) == 2:
            other.execute("ROLLBACK")
        return False

    db = connect(tmp_path / "t.db", "tickets", busy_timeout=3600, give_up=give_up)
    other.execute("BEGIN IMMEDIATE")
    before = db.writes
    try:
        with db.transaction():
            db.run("UPDATE tickets SET title = title")
        assert len(asked) == 2  # it waited two slices, then took the lock and wrote
        assert db.writes == before + 1
    finally:
        other.close()
        db.close()


def test_without_give_up_calls_wait_as_before(tmp_path: Path) -> None:
    db = connect(tmp_path / "t.db", "tickets", busy_timeout=0.2)
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusyError), db.transaction():
            pass
        assert db.one("PRAGMA busy_timeout")[0] == 200  # type: ignore[index]
    finally:
        other.execute("ROLLBACK")
        other.close()
        db.close()
