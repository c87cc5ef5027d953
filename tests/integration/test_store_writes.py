"""`Database.writes`: what a stopping engine counts as its store answering
(`StoreGate.stopping`). A read never counts (another client's write lock lets it
through); a write the store took does, whatever rows it changed; a write refused as busy
does not. The same contract on each dialect."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import psycopg
import pytest
from tests.conftest import Target

from swarm_engine.errors import StoreBusyError
from swarm_engine.store import open_database
from swarm_engine.store.db import Database


def insert(engine_id: str) -> str:
    """An engine row (SQL both dialects run as it is: no parameters)."""
    return (
        "INSERT INTO engines (id, kind, host, pid, max_vms, backend)"
        f" VALUES ('{engine_id}', 'daemon', 'h', 1, 1, 'process')"
    )


@pytest.fixture
def db(store_target: Target) -> Iterator[Database]:
    opened = open_database(store_target.target, "tickets", busy_timeout=0.2)
    yield opened
    opened.close()


def test_reads_do_not_count_and_each_write_taken_counts_once(db: Database) -> None:
    before = db.writes
    db.one("SELECT count(*) FROM tickets")
    db.all("SELECT id FROM engines")
    assert db.writes == before
    db.run("UPDATE engines SET pid = 2 WHERE id = 'none'")  # changes no row: still a write
    assert db.writes == before + 1
    with db.transaction():
        db.run(insert("e1"))
        db.run("UPDATE engines SET pid = 3 WHERE id = 'e1'")
    assert db.writes == before + 2  # one transaction, committed
    db.atomic(lambda: db.run(insert("e2")))
    assert db.writes == before + 3


def test_a_transaction_rolled_back_does_not_count(db: Database) -> None:
    before = db.writes
    with pytest.raises(RuntimeError), db.transaction():
        db.run(insert("e1"))
        raise RuntimeError("the caller's own error")
    assert db.writes == before
    assert db.all("SELECT id FROM engines") == []


def test_a_write_refused_while_another_client_holds_the_lock_does_not_count(
    db: Database, store_target: Target
) -> None:
    before = db.writes
    if isinstance(store_target.target, str):
        other: sqlite3.Connection | psycopg.Connection[object] = psycopg.connect(
            store_target.target
        )
        other.execute("LOCK TABLE engines IN EXCLUSIVE MODE")  # reads go through
    else:
        other = sqlite3.connect(store_target.target, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
    try:
        assert db.all("SELECT id FROM engines") == []  # a read answers all the same
        with pytest.raises(StoreBusyError):
            db.run(insert("e1"))
        with pytest.raises(StoreBusyError), db.transaction():
            db.run(insert("e2"))
        assert db.writes == before
    finally:
        other.rollback()
        other.close()
    db.run(insert("e3"))
    assert db.writes == before + 1
