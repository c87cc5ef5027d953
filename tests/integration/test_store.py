"""The store contract, on real SQLite files and a real PostgreSQL server alike: schema and
defaults for outside writers, atomic claims (every ticket exactly once under contention),
claim order, fencing of stale attempts, one reclaimer, a busy store as `StoreBusyError`."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.conftest import Target

from swarm_engine.engine.orphans import LeftRuns
from swarm_engine.engine.reaper import ReapReport, cleanup, reclaim_expired
from swarm_engine.errors import (
    ConflictError,
    NotFoundError,
    StaleAttemptError,
    StoreBusyError,
    StoreIntegrityError,
)
from swarm_engine.models import Usage
from swarm_engine.service import runs as run_service
from swarm_engine.store import Store, open_store
from swarm_engine.store.sqlite import migrations
from swarm_engine.store.timestamps import parse_timestamp


def claim_all(store: Store, engine: str, limit: int = 1) -> list[int]:
    got: list[int] = []
    while batch := store.tickets.claim_next(
        engine_id=engine, attempt_id=uuid.uuid4().hex, lease_ttl=30, limit=limit
    ):
        got += [t.id for t in batch]
    return got


def test_sqlite_migrations_set_up_the_file_once(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    open_store(db).close()
    open_store(db).close()  # a second open applies nothing
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == migrations("tickets")[-1][0]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_keeps_data_and_applies_nothing(store_target: Target) -> None:
    store = open_store(store_target.target)
    tid = store.tickets.create(title="kept", agent_id="echo")
    store.close()
    store = open_store(store_target.target)
    assert store.tickets.get(tid).title == "kept"
    store.close()


def test_concurrent_first_opens_migrate_once(store_target: Target) -> None:
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            open_store(store_target.target).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_an_outside_insert_is_a_complete_ticket(store_target: Target) -> None:
    open_store(store_target.target).close()
    store_target.sql(
        "INSERT INTO tickets (title, description, status, agent_id) VALUES ('t', 'd', 'open', 'echo');"
        "INSERT INTO tickets (title, description, status, execution_mode, workflow_id)"
        " VALUES ('w', 'd', 'open', 'workflow', 'text-report');"
    )
    store = open_store(store_target.target)
    one, two = store.tickets.get(1), store.tickets.get(2)
    assert one.inputs == {} and one.priority == 0 and one.attempts == 0
    assert one.execution_mode == "single" and one.max_attempts >= 1 and one.defects == ()
    assert one.created_at is not None and one.created_at.tzinfo is not None
    assert store.tickets.list()[0].as_dict()["created_at"].endswith("Z")
    assert two.execution_mode == "workflow"
    assert [e["new_status"] for e in store.tickets.events(1)] == ["open"]
    store.close()


@pytest.mark.parametrize(
    "bad",
    [
        "INSERT INTO tickets (title, status, agent_id) VALUES ('x', 'bogus', 'echo')",
        "INSERT INTO tickets (title, status) VALUES ('x', 'open')",  # single needs agent_id
        "INSERT INTO tickets (title, status, agent_id, inputs) VALUES ('x', 'open', 'echo', '{bad')",
        "INSERT INTO step_executions (run_id, step_id, agent_name, agent_version, agent_kind)"
        " VALUES (999, 's', 'echo', '1', 'echo')",
    ],
)
def test_the_schema_refuses_invalid_rows(store_target: Target, bad: str) -> None:
    open_store(store_target.target).close()
    prefix = "PRAGMA foreign_keys=ON;" if store_target.dialect == "sqlite" else ""
    with pytest.raises(subprocess.CalledProcessError):
        store_target.sql(prefix + bad)


@pytest.mark.parametrize("limit", [1, 4])
def test_every_open_ticket_is_claimed_exactly_once_under_contention(
    store_target: Target, limit: int
) -> None:
    store = open_store(store_target.target)
    for i in range(200):
        store.tickets.create(title=f"t{i}", agent_id="echo")
    store.close()
    claims: dict[str, list[int]] = {}
    barrier = threading.Barrier(8)

    def worker(name: str) -> None:
        mine = open_store(store_target.target)  # one connection per actor, as engines have
        barrier.wait()
        claims[name] = claim_all(mine, name, limit)
        mine.close()

    threads = [threading.Thread(target=worker, args=(f"e{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [tid for got in claims.values() for tid in got]
    assert sorted(every) == list(range(1, 201))
    rows = store_target.rows(
        "SELECT count(*) AS n FROM tickets WHERE status='claimed' AND attempts=1"
        " AND attempt_id IS NOT NULL"
    )
    assert rows[0]["n"] == 200


def test_claims_go_by_priority_then_age_and_batches_keep_that_order(store_target: Target) -> None:
    store = open_store(store_target.target)
    low = store.tickets.create(title="low", agent_id="echo", priority=0)
    high = store.tickets.create(title="high", agent_id="echo", priority=5)
    low2 = store.tickets.create(title="low2", agent_id="echo", priority=0)
    top = store.tickets.create(title="top", agent_id="echo", priority=9)
    first = store.tickets.claim_next(engine_id="e", attempt_id="a", lease_ttl=30, limit=1)
    rest = store.tickets.claim_next(engine_id="e", attempt_id="b", lease_ttl=30, limit=10)
    assert [t.id for t in first] == [top]
    assert [t.id for t in rest] == [high, low, low2]
    assert len({t.attempt_id for t in [*first, *rest]}) == 4
    assert store.tickets.claim_next(engine_id="e", attempt_id="c", lease_ttl=30, limit=10) == []
    store.close()


def test_claiming_a_claimed_ticket_is_refused(store_target: Target) -> None:
    store = open_store(store_target.target)
    tid = store.tickets.create(title="x", agent_id="echo")
    store.tickets.claim(tid, engine_id="a", attempt_id="1", lease_ttl=30)
    with pytest.raises(ConflictError, match="already claimed by engine a"):
        store.tickets.claim(tid, engine_id="b", attempt_id="2", lease_ttl=30)
    with pytest.raises(NotFoundError):
        store.tickets.claim(999, engine_id="b", attempt_id="3", lease_ttl=30)
    store.close()


def test_a_stale_attempt_cannot_write_after_reclaim(store_target: Target) -> None:
    store = open_store(store_target.target)
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
    # the lease expires (moved in the database by an outside writer, not by sleeping)
    store_target.sql(
        f"UPDATE tickets SET lease_expires_at = '2000-01-01T00:00:00.000Z' WHERE id = {tid}"
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
    store.close()


def test_a_whole_run_is_recorded_with_usage_rolled_up(store_target: Target) -> None:
    store = open_store(store_target.target)
    store.engines.register("e", kind="daemon", host="h", pid=1, max_vms=1, backend="process")
    tid = store.tickets.create(title="x", agent_id="echo", inputs={"n": 1})
    [ticket] = store.tickets.claim_next(engine_id="e", attempt_id="a", lease_ttl=30)
    run_id = store.runs.start_run(
        ticket, engine_id="e", workflow_name=None, workflow_version=None, inputs={"n": 1}
    )
    step = store.runs.add_step(
        run_id, step_id="main", agent_name="echo", agent_version="1", agent_kind="echo", inputs={}
    )
    store.vms.record_boot(
        "vm-1", backend="process", host="h", engine_id="e", owner_pid=1, memory_mb=64, vcpus=1
    )
    with store.transaction():
        store.vms.record_ready(
            "vm-1", pid=2, workspace="/w", socket_path=None, overlay_path=None, isolation="bwrap"
        )
        store.vms.record_busy("vm-1", step)
        store.runs.step_started(step, "vm-1")
    usage = Usage(input_tokens=10, output_tokens=5, cost_usd=0.25)
    store.runs.step_finished(
        step, status="done", outputs={"ok": True}, exit_code=0, error=None, usage=usage
    )
    store.runs.finish_run(run_id, ticket, status="done", outputs={"ok": True})
    store.vms.record_destroyed("vm-1")
    done = store.tickets.get(tid)
    assert done.status == "done" and done.result == {"ok": True}
    run = store.runs.get_run(run_id)
    assert run["status"] == "done" and run["input_tokens"] == 10 and run["cost_usd"] == 0.25
    assert isinstance(run["duration_ms"], int)
    [recorded] = store.runs.steps(run_id)
    assert recorded["vm_isolation"] == "bwrap" and recorded["outputs"] == {"ok": True}
    assert store.runs.usage_totals()["output_tokens"] == 5
    assert [e["new_status"] for e in store.tickets.events(tid)] == [
        "open",
        "claimed",
        "running",
        "done",
    ]
    assert store.vms.live() == []
    store.close()


def test_sums_of_usage_and_slots_never_overflow(store_target: Target) -> None:
    """Any writer may store 2**63-1 tokens or a cost of 1e308: the run's roll-up, the usage
    totals (`status`) leave out such an implausible value (records.py: over 2**40 tokens
    of a kind, or 1e6 USD, or negative), never an `integer overflow` (SQLite) or `bigint
    out of range` (PostgreSQL) error, and never a total spoiled by one row: the row's own
    read names the defect, the totals a count of runs left out. Token totals stop at
    2**53-1, exact in every JSON reader. A max_vms over 1024 adds no slot to its host
    (`huge_max_vms` counts it), so two of 2**63-1 fail nothing either."""
    most = 2**63 - 1
    store = open_store(store_target.target)
    store.engines.register("e", kind="daemon", host="h", pid=1, max_vms=1, backend="process")
    store.engines.register("f", kind="daemon", host="h", pid=2, max_vms=1, backend="process")
    store_target.sql(f"UPDATE engines SET max_vms = {most}")
    assert [(h["slots"], h["huge_max_vms"]) for h in store.engines.hosts()] == [(0, 2)]
    store.tickets.create(title="x", agent_id="echo", inputs={})
    [ticket] = store.tickets.claim_next(engine_id="e", attempt_id="a", lease_ttl=30)
    run_id = store.runs.start_run(
        ticket, engine_id="e", workflow_name=None, workflow_version=None, inputs={}
    )
    usages = [Usage(input_tokens=most, cost_usd=1e308), Usage(input_tokens=2**40 + 1,
              output_tokens=-5, cost_usd=1e6 + 1), Usage(input_tokens=2**40 - 10, cost_usd=1e6 - 0.5),
              Usage(input_tokens=10, output_tokens=3, cost_usd=0.5)]  # fmt: skip
    for n, usage in enumerate(usages):
        step = store.runs.add_step(
            run_id, step_id=f"s{n}", agent_name="echo", agent_version="1", agent_kind="echo",
            inputs={},
        )  # fmt: skip
        store.runs.step_finished(step, status="done", outputs={}, exit_code=0, error=None,
                                 usage=usage)  # fmt: skip
    steps = store.runs.steps(run_id)
    assert steps[0]["input_tokens"] is None and steps[0]["cost_usd"] is None
    assert steps[0]["defects"] == [
        "input_tokens: implausible (9223372036854775807: a step or run uses 0 to 2**40 of"
        " a kind), left out of totals",
        "cost_usd: implausible (1e+308: a step or run costs 0 to 1e6 USD), left out of totals",
    ]
    assert [d.split(":")[0] for d in steps[1]["defects"]] == ["input_tokens", "output_tokens",
                                                              "cost_usd"]  # fmt: skip
    assert "defects" not in steps[2] and "defects" not in steps[3]
    store.runs.finish_run(run_id, ticket, status="done", outputs={})
    run = store.runs.get_run(run_id)
    assert (run["input_tokens"], run["output_tokens"], run["cost_usd"]) == (2**40, 3, 1e6)
    assert "defects" not in run
    store_target.sql(
        "INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, execution_mode, status,"
        f" input_tokens, output_tokens, cost_usd) VALUES ({ticket.id}, 2, 'b', 'single',"
        f" 'done', {most}, 5, 1e308)"
    )
    assert store.runs.usage_totals()["implausible_runs"] == 1
    totals = run_service.usage_totals(store)
    assert (totals["input_tokens"], totals["output_tokens"], totals["cost_usd"]) == (2**40, 8, 1e6)
    assert totals["defects"] == [
        "usage: 1 run(s) with an implausible token count or cost (negative, not a number,"
        " over 2**40 tokens or 1e6 USD), left out"
    ]
    # 8,193 runs of 2**40 tokens each: more than 2**53 in all, which stops at 2**53-1
    many = (
        "SELECT x FROM generate_series(3, 8195) x"
        if store_target.dialect == "postgresql"
        else "WITH RECURSIVE n(x) AS (SELECT 3 UNION ALL SELECT x + 1 FROM n WHERE x < 8195)"
        " SELECT x FROM n"
    )
    store_target.sql(
        "INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, execution_mode, status,"
        f" input_tokens) SELECT {ticket.id}, x, 'm' || x, 'single', 'done', {2**40} FROM ({many}) q"
    )
    assert store.runs.usage_totals()["input_tokens"] == 2**53 - 1
    store.close()


def test_a_tickets_runs_and_events_are_read_a_window_at_a_time(store_target: Target) -> None:
    """The newest N below a cursor, oldest first, and the count of all: what keeps a
    ticket's detail bounded however many runs and events it has."""
    store = open_store(store_target.target)
    tid = store.tickets.create(title="x", agent_id="echo", inputs={})
    store_target.sql(
        "INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, execution_mode, status)"
        f" SELECT {tid}, i, 'a' || i, 'single', 'done' FROM"
        " (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30)"
        " SELECT i FROM n) AS n;"
        "INSERT INTO ticket_events (ticket_id, old_status, new_status)"
        f" SELECT {tid}, 'open', 'done' FROM"
        " (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30)"
        " SELECT i FROM n) AS n;"
    )
    ids = [r["id"] for r in store.runs.runs_for_ticket(tid)]
    assert len(ids) == 30 == store.runs.count_for_ticket(tid) and ids == sorted(ids)
    assert [r["id"] for r in store.runs.runs_for_ticket(tid, limit=5)] == ids[-5:]
    older = store.runs.runs_for_ticket(tid, before=ids[-5], limit=5)
    assert [r["id"] for r in older] == ids[-10:-5]
    events = store.tickets.events(tid)
    assert len(events) == 31 == store.tickets.count_events(tid)
    assert store.tickets.events(tid, limit=3) == events[-3:]
    assert store.tickets.events(tid, before=events[1]["id"], limit=3) == events[:1]
    store.close()


def test_a_runs_steps_and_their_logs_are_read_a_window_at_a_time(store_target: Target) -> None:
    """A run may have any number of steps: they are read as the newest N below a cursor,
    or page by page from the oldest (one step id's attempts only, when asked), and its
    logs by run, never by a list of all its steps."""
    store = open_store(store_target.target)
    tid = store.tickets.create(title="x", agent_id="echo", inputs={})
    store_target.sql(
        "INSERT INTO workflow_runs (id, ticket_id, attempt, attempt_id, execution_mode, status)"
        f" VALUES (40, {tid}, 1, 'a1', 'workflow', 'done'),"
        f" (41, {tid}, 2, 'a2', 'workflow', 'done');"
        "INSERT INTO step_executions (run_id, step_id, agent_name, agent_version, agent_kind,"
        " status) SELECT 40, CASE WHEN i % 10 = 0 THEN 'ten' ELSE 's' || i END, 'echo', '1',"
        " 'echo', 'done' FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
        " WHERE i < 250) SELECT i FROM n) AS n;"
        "INSERT INTO step_executions (run_id, step_id, agent_name, agent_version, agent_kind,"
        " status) VALUES (41, 'ten', 'echo', '1', 'echo', 'done');"
        "INSERT INTO step_logs (step_execution_id, data)"
        " SELECT id, 'log ' || step_id FROM step_executions ORDER BY id;"
    )
    ids = [int(r["id"]) for r in store_target.rows(
        "SELECT id FROM step_executions WHERE run_id = 40 ORDER BY id")]  # fmt: skip
    assert store.runs.count_steps(40) == 250
    assert [s["id"] for s in store.runs.last_steps(40, 5)] == ids[-5:]
    assert [s["id"] for s in store.runs.last_steps(40, 5, before=ids[-5])] == ids[-10:-5]
    paged: list[int] = []
    while page := store.runs.steps_from(40, paged[-1] if paged else 0, 100):
        paged += [s["id"] for s in page]
    assert paged == ids
    tens = store.runs.steps_from(40, 0, 100, step_id="ten")
    assert [s["id"] for s in tens] == ids[9::10]
    assert [s["id"] for s in store.runs.steps_by_ids(40, [ids[3], ids[0], 10**9])] == [
        ids[0], ids[3]]  # fmt: skip
    assert store.runs.first_step_ids(40, 3) == ["s1", "s2", "s3"]
    logs = store.logs.after((), 0, 1000, run=(40, None))
    assert [p.data for p in logs] == [f"log {s}" for s in
                                      (("ten" if i % 10 == 0 else f"s{i}") for i in range(1, 251))]  # fmt: skip
    ten_logs = store.logs.after((), 0, 1000, run=(40, "ten"))
    assert [p.step_execution_id for p in ten_logs] == ids[9::10]  # not run 41's step 'ten'
    assert store.logs.after((), logs[-1].id, 10, run=(40, None)) == []
    store.close()


def test_a_vm_recorded_destroyed_late_keeps_the_time_it_went(store_target: Target) -> None:
    """A VM's end written after the fact (with its run's end) says when it really went."""
    store = open_store(store_target.target)
    store.engines.register("e", kind="daemon", host="h", pid=1, max_vms=1, backend="process")
    for vm_id in ("vm-late", "vm-now"):
        store.vms.record_boot(
            vm_id, backend="process", host="h", engine_id="e", owner_pid=1, memory_mb=64, vcpus=1
        )
    went = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    before = datetime.now(UTC).replace(microsecond=0)
    store.vms.record_destroyed("vm-late", None, went)
    store.vms.record_destroyed("vm-now", "destroy failed: x")
    late, now = store.vms.get("vm-late"), store.vms.get("vm-now")
    assert late is not None and now is not None
    assert late["state"] == "destroyed" and late["destroyed_at"] == "2026-01-02T03:04:05.678Z"
    assert now["state"] == "failed" and parse_timestamp(now["destroyed_at"]) >= before
    store.close()


def test_expired_leases_are_reclaimed_once_by_many_reclaimers(store_target: Target) -> None:
    store = open_store(store_target.target)
    ids = [store.tickets.create(title=f"t{i}", agent_id="echo") for i in range(30)]
    claim_all(store, "gone", limit=30)
    store_target.sql("UPDATE tickets SET lease_expires_at = '2000-01-01T00:00:00Z'")
    store.close()
    requeued: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def reclaimer() -> None:
        mine = open_store(store_target.target)
        barrier.wait()
        for _ in range(3):
            got = [e.ticket_id for e in mine.tickets.reclaim_expired()]
            with lock:
                requeued.extend(got)
        mine.close()

    threads = [threading.Thread(target=reclaimer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(requeued) == ids
    assert (
        store_target.rows("SELECT count(*) AS n FROM tickets WHERE status = 'open'")[0]["n"] == 30
    )


def test_a_value_the_database_cannot_hold_is_an_integrity_error(store_target: Target) -> None:
    store = open_store(store_target.target)
    with pytest.raises(StoreIntegrityError):
        store.tickets.create(title="x", agent_id="echo", priority=2**64)
    assert store.tickets.list() == []
    store.close()


def test_a_lock_held_past_the_busy_timeout_is_store_busy(store_target: Target) -> None:
    store = open_store(store_target.target, busy_timeout=0.2)
    tid = store.tickets.create(title="x", agent_id="echo")
    other = open_store(store_target.target, busy_timeout=0.2)
    with other.transaction():
        other.tickets.cancel(tid)  # holds the row (PostgreSQL) or the write lock (SQLite)
        with pytest.raises(StoreBusyError):
            store.tickets.cancel(tid)
    assert store.tickets.get(tid).status == "cancelled"
    store.close()
    other.close()


def test_a_ticket_the_store_will_not_reclaim_leaves_the_others_reclaimed(
    store_target: Target,
) -> None:
    """A trigger (or constraint) that refuses to change one expired ticket made the whole
    reclaim fail: the daemon's reclaimer died, stopping the engine, and `cleanup` and every
    `start` failed from then on. That ticket is left as it is, the others come back."""
    store = open_store(store_target.target)
    ids = [store.tickets.create(title=f"t{i}", agent_id="echo") for i in range(3)]
    claim_all(store, "gone", limit=3)
    store_target.sql("UPDATE tickets SET lease_expires_at = '2000-01-01T00:00:00Z'")
    stuck = ids[1]
    if store_target.dialect == "sqlite":
        store_target.sql(
            f"CREATE TRIGGER keep BEFORE UPDATE OF status ON tickets WHEN OLD.id = {stuck}"
            " BEGIN SELECT RAISE(ABORT, 'ticket stays'); END"
        )
    else:  # a trigger's own error (P0001), not a constraint's
        store_target.sql(
            "CREATE FUNCTION keep() RETURNS trigger AS $$ BEGIN"
            f" IF OLD.id = {stuck} THEN RAISE EXCEPTION 'ticket stays'; END IF;"
            " RETURN NEW; END $$ LANGUAGE plpgsql;"
            " CREATE TRIGGER keep BEFORE UPDATE ON tickets FOR EACH ROW EXECUTE FUNCTION keep()"
        )
    got = {e.ticket_id: e for e in store.tickets.reclaim_expired()}
    assert sorted(got) == ids
    assert [got[i].status for i in ids] == ["open", "stuck", "open"], got
    assert "ticket stays" in str(got[stuck].error) and "\n" not in str(got[stuck].error)
    report = ReapReport()  # `cleanup`'s part: the same, without failing
    reclaim_expired(store, report)
    assert report.requeued == [] and report.failed == []
    assert store.tickets.get(stuck).status == "claimed"
    store.close()


def test_rows_the_store_will_not_change_leave_cleanup_and_the_reclaimer_going(
    store_target: Target, tmp_path: Path
) -> None:
    """An engine or VM row a trigger keeps from changing: forgetting silent engines and
    `cleanup` leave it as it is and do the rest (one refused row made them fail: the
    daemon's reclaimer died, and `cleanup` and every `start` failed)."""
    store = open_store(store_target.target)
    for name in ("ghost", "other"):
        store.engines.register(name, kind="daemon", host="elsewhere", pid=1, max_vms=1,
                               backend="process")  # fmt: skip
    store_target.sql("UPDATE engines SET heartbeat_at = '2000-01-01T00:00:00Z'")
    for vm in ("vm-keep", "vm-gone"):
        store.vms.record_boot(vm, backend="process", host="here", engine_id="ghost",
                              owner_pid=999999999, memory_mb=64, vcpus=1)  # fmt: skip
    if store_target.dialect == "sqlite":
        for table, row in (("engines", "ghost"), ("vms", "vm-keep")):
            store_target.sql(f"CREATE TRIGGER keep_{table} BEFORE UPDATE ON {table}"
                             f" WHEN OLD.id = '{row}' BEGIN SELECT RAISE(ABORT, 'stays'); END")  # fmt: skip
    else:
        store_target.sql(
            "CREATE FUNCTION keep() RETURNS trigger AS $$ BEGIN"
            " IF OLD.id IN ('ghost', 'vm-keep') THEN RAISE EXCEPTION 'stays'; END IF;"
            " RETURN NEW; END $$ LANGUAGE plpgsql;"
            " CREATE TRIGGER keep BEFORE UPDATE ON engines FOR EACH ROW EXECUTE FUNCTION keep();"
            " CREATE TRIGGER keep BEFORE UPDATE ON vms FOR EACH ROW EXECUTE FUNCTION keep()"
        )
    assert [e["id"] for e in store.engines.forget_silent(60)] == ["other"]
    report = cleanup(store, tmp_path, "here")
    assert report.vms == ["vm-gone"], report
    states = {r["id"]: r["state"] for r in store_target.rows("SELECT id, state FROM vms")}
    assert states["vm-keep"] == "booting" and states["vm-gone"] in ("destroyed", "failed")
    store.close()


def test_a_run_on_an_engine_heartbeating_in_another_form_keeps_its_ticket(
    store_target: Target,
) -> None:
    """The claim guard reads `heartbeat_at` as an instant, as the reaper does: a fresh
    heartbeat another client wrote as `CURRENT_TIMESTAMP` ('YYYY-MM-DD HH:MM:SS') is fresh
    (compared as text, it sorted before the engine's own form and looked stale)."""
    store = open_store(store_target.target)
    store.engines.register("e", kind="daemon", host="here", pid=1, max_vms=1, backend="process")
    tid = store.tickets.create(title="x", agent_id="echo", inputs={})
    [ticket] = store.tickets.claim_next(engine_id="e", attempt_id="a", lease_ttl=30)
    store.runs.start_run(ticket, engine_id="e", workflow_name=None, workflow_version=None,
                         inputs={})  # fmt: skip
    store_target.sql(
        f"UPDATE tickets SET status = 'open' WHERE id = {tid};"
        " UPDATE engines SET heartbeat_at = CURRENT_TIMESTAMP"
    )
    assert store.tickets.claim_next(engine_id="f", attempt_id="b", lease_ttl=30) == []
    with pytest.raises(ConflictError, match="still has a run going"):
        store.tickets.claim(tid, engine_id="f", attempt_id="c", lease_ttl=30)
    store.close()


@pytest.mark.parametrize("lease", ["'now'", "'NOW'", "'infinity'"])
def test_a_lease_written_as_text_for_the_time_of_reading_is_expired(
    store_target: Target, lease: str
) -> None:
    """A lease is renewed by its engine only: SQLite's `julianday('now')` is the time of
    reading, so a lease stored as the text `now` never expired and a dead engine's ticket
    was never reclaimed. It counts as expired, as an unreadable lease does (PostgreSQL
    reads `now` when it is written: it ages as any instant; `infinity` is too far ahead)."""
    store = open_store(store_target.target)
    tid = store.tickets.create(title="x", agent_id="echo")
    claim_all(store, "gone")
    store_target.sql(f"UPDATE tickets SET lease_expires_at = {lease}")
    assert [e.ticket_id for e in store.tickets.reclaim_expired()] == [tid]
    assert store.tickets.get(tid).status == "open"
    store.close()


@pytest.mark.parametrize("beat", ["'now'", "'Now'", "'infinity'", "'9999-01-01T00:00:00Z'"])
def test_a_heartbeat_no_engine_wrote_is_stale(store_target: Target, beat: str) -> None:
    """A heartbeat stored as the text `now` (always the time of reading), `infinity` or
    years ahead was always fresh: a ticket whose run a dead engine left `running` was
    never claimed again, and the engine never counted as silent. Such a heartbeat is stale
    (fail closed: the ticket can be claimed); a real fresh heartbeat still guards it."""
    store = open_store(store_target.target)
    store.engines.register("e", kind="daemon", host="here", pid=1, max_vms=1, backend="process")
    tid = store.tickets.create(title="x", agent_id="echo", inputs={})
    [ticket] = store.tickets.claim_next(engine_id="e", attempt_id="a", lease_ttl=30)
    store.runs.start_run(ticket, engine_id="e", workflow_name=None, workflow_version=None,
                         inputs={})  # fmt: skip
    store_target.sql(f"UPDATE tickets SET status = 'open' WHERE id = {tid}")
    assert store.tickets.claim_next(engine_id="f", attempt_id="b", lease_ttl=30) == []
    store_target.sql(f"UPDATE engines SET heartbeat_at = {beat}")
    if store_target.dialect == "postgresql" and beat in ("'now'", "'Now'"):
        # a timestamptz reads `now` once, as it is written: the engine's own heartbeat
        assert store.tickets.claim_next(engine_id="f", attempt_id="b", lease_ttl=30) == []
        return
    assert [e["id"] for e in store.engines.silent(60)] == ["e"]
    # a stale engine's run still blocks the claim until the engine is recorded dead, and
    # its runs closed with it (a daemon's round, `forget_silent`)
    assert store.tickets.claim_next(engine_id="f", attempt_id="b", lease_ttl=30) == []
    assert [e["id"] for e in store.engines.forget_silent(60)] == ["e"]
    assert [
        t.id for t in store.tickets.claim_next(engine_id="f", attempt_id="b", lease_ttl=30)
    ] == [tid]
    store.close()


def _cancelled_mid_run(store: Store, engine: str = "e") -> tuple[int, int]:
    """A ticket claimed by `engine` (registered, heartbeating), its run started, then
    cancelled by a user: the engine has not yet stopped the run. (ticket id, run id)"""
    store.engines.register(engine, kind="daemon", host="h", pid=1, max_vms=1, backend="process")
    tid = store.tickets.create(title="x", agent_id="echo", inputs={})
    [ticket] = store.tickets.claim_next(engine_id=engine, attempt_id="a", lease_ttl=30)
    run_id = store.runs.start_run(ticket, engine_id=engine, workflow_name=None,
                                  workflow_version=None, inputs={})  # fmt: skip
    store.tickets.cancel(tid)
    return tid, run_id


@pytest.mark.parametrize("bulk", [False, True])
def test_a_reopened_ticket_waits_for_its_live_engine_to_close_the_old_run(
    store_target: Target, bulk: bool
) -> None:
    """Cancel, then reopen at once, while the engine running the ticket has not stopped
    its run yet: the reopen used to close that run itself, so the claim guard let another
    engine (or the same) run the ticket again while the old sandbox still ran. The run is
    left to its engine; the ticket is queued, and claimed only once that engine closed
    its run."""
    store = open_store(store_target.target)
    tid, run_id = _cancelled_mid_run(store)
    if bulk:
        assert store.tickets.reopen_many([tid]) == [tid]
    else:
        assert store.tickets.reopen(tid).status == "open"
    assert store.runs.get_run(run_id)["status"] == "running"
    assert store.tickets.claim_next(engine_id="f", attempt_id="b", lease_ttl=30) == []
    with pytest.raises(ConflictError, match="still has a run going on engine"):
        store.tickets.claim(tid, engine_id="e", attempt_id="c", lease_ttl=30)
    store.runs.cancel_run(run_id, "cancelled (the ticket was reopened)")  # its engine, done
    run = store.runs.get_run(run_id)
    assert (run["status"], run["error"]) == ("cancelled", "cancelled (the ticket was reopened)")
    assert [
        t.id for t in store.tickets.claim_next(engine_id="f", attempt_id="b", lease_ttl=30)
    ] == [tid]
    store.close()


def test_a_reopened_ticket_whose_engine_went_silent_runs_again(store_target: Target) -> None:
    """The old run's engine stopped heartbeating (dead) before it closed the run: the
    ticket is claimed once the engine is recorded dead and the run closed with it, not
    sooner (a stale heartbeat alone may be a frozen engine whose sandbox still runs); an
    engine the caller spares (on its own host, its process alive) is not recorded dead."""
    store = open_store(store_target.target)
    tid, run_id = _cancelled_mid_run(store)
    store.tickets.reopen(tid)
    assert store.tickets.claim_next(engine_id="f", attempt_id="b", lease_ttl=30) == []
    store_target.sql("UPDATE engines SET heartbeat_at = '2000-01-01T00:00:00Z'")
    assert store.tickets.claim_next(engine_id="f", attempt_id="b", lease_ttl=30) == []
    assert store.engines.forget_silent(60, lambda engine: engine["id"] == "e") == []
    assert store.tickets.claim_next(engine_id="f", attempt_id="b", lease_ttl=30) == []
    assert [e["id"] for e in store.engines.forget_silent(60)] == ["e"]
    run = store.runs.get_run(run_id)
    assert run["status"] == "failed" and "stopped heartbeating" in run["error"], run
    assert [
        t.id for t in store.tickets.claim_next(engine_id="f", attempt_id="b", lease_ttl=30)
    ] == [tid]
    store.close()


@pytest.mark.parametrize("state", ["stopped", "dead"])
def test_a_run_of_an_engine_recorded_stopped_blocks_until_closed(
    store_target: Target, state: str
) -> None:
    """Another writer records a live engine stopped (or dead): its run still blocks the
    ticket's claim while it heartbeats; once it is silent for two leases its runs are
    closed as a dead engine's, and the ticket runs again."""
    store = open_store(store_target.target)
    tid, run_id = _cancelled_mid_run(store)
    store_target.sql(f"UPDATE tickets SET status = 'open' WHERE id = {tid}")
    store_target.sql(f"UPDATE engines SET state = '{state}'")
    assert store.tickets.claim_next(engine_id="f", attempt_id="b", lease_ttl=30) == []
    assert store.engines.close_silent_runs(60) == []  # it heartbeats: its run stays
    assert store.runs.get_run(run_id)["status"] == "running"
    store_target.sql("UPDATE engines SET heartbeat_at = '2000-01-01T00:00:00Z'")
    assert store.engines.close_silent_runs(60) == ["e"]
    assert store.runs.get_run(run_id)["status"] == "failed"
    assert [
        t.id for t in store.tickets.claim_next(engine_id="f", attempt_id="b", lease_ttl=30)
    ] == [tid]
    store.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("gone", ["stopped", "dead", "deleted"])
@pytest.mark.parametrize("bulk", [False, True])
def test_a_reopen_trusts_no_engine_row_to_close_the_old_run(
    store_target: Target, gone: str, bulk: bool
) -> None:
    """Cancel, then another writer records the engine stopped or dead (or deletes its
    row) while it is frozen with its sandbox still running, then reopen: the reopen
    used to close the old run itself, so the ticket ran again beside that sandbox. The
    run now stays until the engine has been silent for two leases (a row that is gone:
    seen gone for two leases), and never closes while its process lives on the
    closer's own host; then the ticket is claimed."""
    if gone == "deleted" and store_target.dialect == "postgresql":
        pytest.skip("a foreign key keeps a run's engine row in PostgreSQL")
    store = open_store(store_target.target)
    tid, run_id = _cancelled_mid_run(store)
    if gone == "deleted":
        store_target.sql(
            "INSERT INTO vms (id, backend, host, engine_id, owner_pid, state)"
            " VALUES ('vm1', 'process', 'h', 'e', 1, 'busy');"
            "INSERT INTO step_executions (run_id, step_id, agent_name, agent_version,"
            f" agent_kind, vm_id, status) VALUES ({run_id}, 'main', 'echo', '1', 'echo',"
            " 'vm1', 'running')"
        )
        store_target.sql("DELETE FROM engines")
    else:
        store_target.sql(f"UPDATE engines SET state = '{gone}'")
    if bulk:
        assert store.tickets.reopen_many([tid]) == [tid]
    else:
        assert store.tickets.reopen(tid).status == "open"
    alive = {1}
    clock = FakeClock()
    here = LeftRuns("h", 30, alive=lambda pid: pid in alive, clock=clock)
    elsewhere = LeftRuns("other-host", 30, alive=lambda pid: False, clock=clock)
    for closer in (here, elsewhere):
        assert closer.close(store, tid) == []
    assert store.runs.get_run(run_id)["status"] == "running"
    assert store.tickets.claim_next(engine_id="f", attempt_id="b", lease_ttl=30) == []
    if gone != "deleted":
        store_target.sql("UPDATE engines SET heartbeat_at = '2000-01-01T00:00:00Z'")
    clock.now += 61
    assert here.close(store, tid) == []  # its process lives on this host: frozen, not dead
    assert store.runs.get_run(run_id)["status"] == "running"
    alive.clear()
    assert here.close(store, tid) == ["e"]
    run = store.runs.get_run(run_id)
    assert run["status"] == "failed" and "stopped heartbeating" in run["error"], run
    assert [
        t.id for t in store.tickets.claim_next(engine_id="f", attempt_id="b", lease_ttl=30)
    ] == [tid]
    store.close()


def test_a_run_whose_engine_row_is_gone_closes_after_two_leases_elsewhere(
    store_target: Target,
) -> None:
    """A row deleted by another writer, the engine's VMs on another host: a closer that
    cannot look at that process closes its runs once it has seen the row gone for two
    leases (an engine that lives writes its row back within a heartbeat); a row that
    comes back in between starts the count again."""
    if store_target.dialect == "postgresql":
        pytest.skip("a foreign key keeps a run's engine row in PostgreSQL")
    store = open_store(store_target.target)
    tid, run_id = _cancelled_mid_run(store)
    store.tickets.reopen(tid)
    store_target.sql("DELETE FROM engines")
    clock = FakeClock()
    closer = LeftRuns("other-host", 30, alive=lambda pid: True, clock=clock)
    assert closer.close(store) == []
    clock.now += 59
    assert closer.close(store) == []
    store.engines.register("e", kind="daemon", host="h", pid=1, max_vms=1, backend="process")
    assert closer.close(store) == []  # back: heartbeating again
    store_target.sql("DELETE FROM engines")
    clock.now += 59
    assert closer.close(store) == []
    clock.now += 2
    assert closer.close(store) == []
    assert store.runs.get_run(run_id)["status"] == "running"
    clock.now += 59
    assert closer.close(store) == ["e"]
    assert store.runs.get_run(run_id)["status"] == "failed"
    store.close()


def test_a_runs_negative_duration_is_a_defect(store_target: Target) -> None:
    """A run's `duration_ms` is any writer's: a negative one reads as None with a defect
    (`duration_ms: implausible (-99: a run lasts 0 ms or more)`), as a step's does; a
    long one (any number of steps) is read as it is (tester h-195: -99 was shown)."""
    store = open_store(store_target.target)
    store.tickets.create(title="x", agent_id="echo", inputs={})
    store_target.sql(
        "INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, execution_mode, status,"
        " duration_ms) VALUES (1, 1, 'a', 'single', 'done', -99),"
        " (1, 2, 'b', 'single', 'done', 90000000000)"
    )
    short, long = store.runs.get_run(1), store.runs.get_run(2)
    assert short["duration_ms"] is None
    assert short["defects"] == ["duration_ms: implausible (-99: a run lasts 0 ms or more)"]
    assert long["duration_ms"] == 90000000000 and "defects" not in long
    store.close()
