"""The ticket store on real SQLite files: schema, public-interface defaults, atomic claims, fencing."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from tests.support.cli import query, sqlite_shell

from swarm_engine.engine.reaper import ReapReport, reclaim_expired
from swarm_engine.errors import ConflictError, NotFoundError, StaleAttemptError
from swarm_engine.models import Usage
from swarm_engine.store import open_store
from swarm_engine.store.sqlite import migrations


def test_migrations_create_the_schema_once(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    open_store(db).close()
    store = open_store(db)  # a second open applies nothing and keeps data
    conn = store.db.conn
    assert conn.execute("PRAGMA user_version").fetchone()[0] == migrations("tickets")[-1][0]
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "tickets",
        "workflow_runs",
        "step_executions",
        "vms",
        "engines",
        "ticket_events",
    } <= tables
    store.close()


def test_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            open_store(db).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_plain_sqlite3_insert_is_a_complete_ticket(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    open_store(db).close()
    sqlite_shell(
        db,
        "INSERT INTO tickets (title, description, status, agent_id) VALUES ('t', 'd', 'open', 'echo');"
        "INSERT INTO tickets (title, description, status, execution_mode, workflow_id)"
        " VALUES ('w', 'd', 'open', 'workflow', 'text-report');",
    )
    store = open_store(db)
    one, two = store.tickets.get(1), store.tickets.get(2)
    assert one.inputs == {} and one.priority == 0 and one.attempts == 0
    assert one.execution_mode == "single" and one.max_attempts >= 1 and one.defects == ()
    stored = query(db, "SELECT created_at FROM tickets WHERE id = 1")[0]["created_at"]
    assert stored.endswith("Z") and len(stored) == len("2026-01-01T00:00:00.000Z")
    assert one.created_at is not None and one.created_at.tzinfo is not None
    assert two.execution_mode == "workflow"
    assert [e["new_status"] for e in store.tickets.events(1)] == ["open"]


def test_the_schema_refuses_invalid_rows(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    open_store(db).close()
    for bad in (
        "INSERT INTO tickets (title, status, agent_id) VALUES ('x', 'bogus', 'echo')",
        "INSERT INTO tickets (title, status) VALUES ('x', 'open')",  # single needs agent_id
        "INSERT INTO tickets (title, status, agent_id, inputs) VALUES ('x', 'open', 'echo', '{bad')",
        "INSERT INTO step_executions (run_id, step_id, agent_name, agent_version, agent_kind)"
        " VALUES (999, 's', 'echo', '1', 'echo')",
    ):
        with pytest.raises(subprocess.CalledProcessError):
            sqlite_shell(db, "PRAGMA foreign_keys=ON;" + bad)


def test_every_open_ticket_is_claimed_exactly_once_under_contention(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = open_store(db)
    for i in range(200):
        store.tickets.create(title=f"t{i}", agent_id="echo")
    store.close()
    claims: dict[str, list[int]] = {}
    barrier = threading.Barrier(8)

    def worker(name: str) -> None:
        mine = open_store(db)  # one connection per actor, as separate engines would have
        got: list[int] = []
        barrier.wait()
        while (
            t := mine.tickets.claim_next(engine_id=name, attempt_id=uuid.uuid4().hex, lease_ttl=30)
        ) is not None:
            got.append(t.id)
        claims[name] = got
        mine.close()

    threads = [threading.Thread(target=worker, args=(f"e{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [tid for got in claims.values() for tid in got]
    assert sorted(every) == list(range(1, 201))
    rows = sqlite3.connect(db).execute(
        "SELECT count(*) FROM tickets WHERE status='claimed' AND attempts=1"
    )
    assert rows.fetchone()[0] == 200


def test_claim_order_is_priority_then_age(tmp_path: Path) -> None:
    store = open_store(tmp_path / "t.db")
    low = store.tickets.create(title="low", agent_id="echo", priority=0)
    high = store.tickets.create(title="high", agent_id="echo", priority=5)
    low2 = store.tickets.create(title="low2", agent_id="echo", priority=0)
    claimed = [
        store.tickets.claim_next(engine_id="e", attempt_id=uuid.uuid4().hex, lease_ttl=30)
        for _ in range(3)
    ]
    order = [t.id for t in claimed if t is not None]
    assert order == [high, low, low2]


def test_claiming_a_claimed_ticket_is_refused(tmp_path: Path) -> None:
    store = open_store(tmp_path / "t.db")
    tid = store.tickets.create(title="x", agent_id="echo")
    store.tickets.claim(tid, engine_id="a", attempt_id="1", lease_ttl=30)
    with pytest.raises(ConflictError, match="already claimed by engine a"):
        store.tickets.claim(tid, engine_id="b", attempt_id="2", lease_ttl=30)
    with pytest.raises(NotFoundError):
        store.tickets.claim(999, engine_id="b", attempt_id="3", lease_ttl=30)


def test_a_stale_attempt_cannot_write_after_reclaim(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = open_store(db)
    for engine in ("a", "b"):
        store.engines.register(engine, kind="daemon", host="h", pid=1, max_vms=1, backend="process")
    tid = store.tickets.create(title="x", agent_id="echo")
    first = store.tickets.claim(tid, engine_id="a", attempt_id="old", lease_ttl=30)
    run_id = store.runs.start_run(
        first, engine_id="a", workflow_name=None, workflow_version=None, inputs={}
    )
    step = store.runs.add_step(
        run_id, step_id="main", agent_name="echo", agent_version="1", agent_kind="echo", inputs={}
    )
    # the lease expires (moved in the database, not by sleeping) and another engine reclaims
    store.db.run(
        "UPDATE tickets SET lease_expires_at = '2000-01-01T00:00:00.000Z' WHERE id = ?", (tid,)
    )
    report = ReapReport()
    reclaim_expired(store, report)
    assert report.requeued == [tid]
    second = store.tickets.claim(tid, engine_id="b", attempt_id="new", lease_ttl=30)
    assert second.attempts == 2
    with pytest.raises(StaleAttemptError):
        store.runs.step_finished(
            step, status="done", outputs={}, exit_code=0, error=None, usage=Usage()
        )
    with pytest.raises(StaleAttemptError):
        store.runs.finish_run(run_id, first, status="done", outputs={"late": True})
    with pytest.raises(StaleAttemptError):
        store.tickets.finish(tid, "old", status="done")
    assert store.tickets.get(tid).status == "claimed"
    assert store.runs.get_run(run_id)["status"] == "failed"
