"""Store faults users meet: a full disk for a moment, a cancel undone by a reopen before
the engine noticed, and `status` showing what runs now."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.acceptance.conftest import engine_ready, stop, write_agent
from tests.support.cli import (
    query,
    sqlite_shell,
    start_engine,
    swarm,
    swarm_inproc,
    wait_until,
)
from tests.support.disk import fill, small_tmpfs
from tests.support.postgres import psql

from swarm_engine.errors import StaleAttemptError, StoreBusyError
from swarm_engine.store import open_store
from swarm_engine.store.sqlite import ID_TABLES


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "small") as mount:
        yield mount


def test_a_full_disk_is_a_transient_store_error(small_disk: Path) -> None:
    store = open_store(small_disk / "tickets.db", busy_timeout=0.2)
    filler = fill(small_disk)
    with pytest.raises(StoreBusyError, match="full"):
        for i in range(1000):  # the WAL has some slack: write until it is used up
            store.tickets.create(title=f"t{i}" * 100, agent_id="echo")
    filler.unlink()
    assert store.tickets.create(title="after", agent_id="echo") > 0
    store.close()


def test_a_run_survives_a_moment_of_full_disk(
    home: Path, tmp_path: Path, small_disk: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = small_disk / "tickets.db"
    env = {
        "SWARM_TICKETS_DB": str(db),
        "SWARM_HEARTBEAT_INTERVAL": "0.3",
        "SWARM_LEASE_TTL": "6",
        "SWARM_BUSY_TIMEOUT": "0.2",
    }
    write_agent(tmp_path / "nap", "name: nap\nkind: shell\ncommand: sleep 1; echo rested\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "nap")).returncode == 0
    open_store(db).close()  # the store on the small disk, migrated
    proc = start_engine(home, "--max-vms", "1", **env)
    engines.append(proc)
    wait_until(lambda: query(db, "SELECT 1 FROM engines"), 30, "the engine")
    sqlite_shell(db, "INSERT INTO tickets (title, status, agent_id) VALUES ('n', 'open', 'nap')")
    wait_until(
        lambda: query(db, "SELECT 1 FROM step_executions WHERE status = 'running'"), 30, "step"
    )
    filler = fill(small_disk)
    logs = home / "artifacts"
    wait_until(
        lambda: any("rested" in p.read_text() for p in logs.rglob("output.log")), 10, "the end"
    )
    time.sleep(1.0)  # sleep-ok: the disk stays full while the step's end must be recorded
    assert proc.poll() is None
    assert query(db, "SELECT status FROM tickets")[0]["status"] == "running"
    filler.unlink()
    wait_until(lambda: query(db, "SELECT status FROM tickets")[0]["status"] == "done", 30, "done")
    (ticket,) = query(db, "SELECT attempts, result FROM tickets")
    assert ticket["attempts"] == 1 and "rested" in ticket["result"]
    assert [r["status"] for r in query(db, "SELECT status FROM workflow_runs")] == ["done"]
    out = stop(proc)
    assert proc.returncode == 0 and "Traceback" not in out, out


def test_a_reopen_before_the_engine_noticed_the_cancel_leaves_the_run_to_its_engine(
    tmp_path: Path,
) -> None:
    """The engine (running, heartbeating) may still run the step: the reopen leaves the
    run `running` for it to close once it has stopped the sandbox (closing it here let
    another claim through while the old sandbox ran); the engine's close, refused as the
    attempt's end (the ticket is not its any more), closes its own rows as cancelled."""
    store = open_store(tmp_path / "t.db")
    store.engines.register("e", kind="daemon", host="h", pid=1, max_vms=1, backend="process")
    tid = store.tickets.create(title="x", agent_id="echo")
    ticket = store.tickets.claim(tid, engine_id="e", attempt_id="a1", lease_ttl=30)
    run_id = store.runs.start_run(
        ticket, engine_id="e", workflow_name=None, workflow_version=None, inputs={}
    )
    store.runs.add_step(
        run_id, step_id="main", agent_name="echo", agent_version="1", agent_kind="echo", inputs={}
    )
    store.tickets.cancel(tid)
    store.tickets.reopen(tid)  # before the engine had a chance to record the cancel
    (run,) = store.runs.runs_for_ticket(tid)
    assert run["status"] == "running"
    assert [s["status"] for s in store.runs.steps(run_id)] == ["queued"]
    assert store.tickets.get(tid).status == "open"
    with pytest.raises(StaleAttemptError):
        store.runs.finish_run(run_id, ticket, status="cancelled")
    store.runs.cancel_run(run_id, "cancelled (the ticket was reopened)")
    (run,) = store.runs.runs_for_ticket(tid)
    assert run["status"] == "cancelled" and "reopened" in run["error"]
    # its step was still queued: it never started, so it is recorded skipped
    assert [(s["status"], s["error"]) for s in store.runs.steps(run_id)] == [
        ("skipped", "not run: the run ended before it started")
    ]
    store.close()


def test_status_shows_busy_vms_as_they_are_now(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    write_agent(tmp_path / "long", "name: long\nkind: shell\ncommand: sleep 300\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "long")).returncode == 0
    # heartbeats far apart: what status shows cannot come from the last heartbeat
    proc = start_engine(
        home, "--max-vms", "2", SWARM_HEARTBEAT_INTERVAL="30", SWARM_LEASE_TTL="120"
    )
    engines.append(proc)
    engine_ready(home, proc)

    def busy() -> int:
        data = json.loads(swarm_inproc(home, "status", "--json").stdout)
        (engine,) = [e for e in data["engines"] if e["pid"] == proc.pid]
        return int(engine["busy_vms"])

    assert busy() == 0
    assert swarm_inproc(home, "ticket", "create", "--title", "l", "--agent", "long").returncode == 0
    # the step is recorded running in the same transaction as its VM busy
    wait_until(
        lambda: query(
            home / "tickets.db", "SELECT 1 FROM step_executions WHERE status = 'running'"
        ),
        30,
        "the step to run",
    )
    assert busy() == 1
    assert swarm_inproc(home, "ticket", "cancel", "1").returncode == 0
    wait_until(lambda: busy() == 0, 10, "the VM to be gone from status")
    stop(proc)


MAX_ID = 9223372036854775807


@pytest.mark.parametrize(
    ("table", "values"),
    [
        ("ticket_events", "(id, ticket_id, new_status) VALUES ({id}, 1, 'open')"),
        (
            "workflow_runs",
            "(id, ticket_id, attempt, attempt_id, execution_mode, status)"
            " VALUES ({id}, 1, 9, 'x', 'single', 'done')",
        ),
        ("tickets", "(id, title, status, agent_id) VALUES ({id}, 'edge', 'open', 'echo')"),
    ],
)
def test_an_id_that_would_spend_the_sequence_is_refused(
    home: Path, table: str, values: str
) -> None:
    """An outside writer's row with the largest id would spend a table's AUTOINCREMENT
    (every later insert refused, for good): the store refuses an id above 2^62 where it is
    written, and the engine goes on."""
    assert swarm_inproc(home, "ticket", "create", "--title", "a", "--agent", "echo").returncode == 0
    with pytest.raises(subprocess.CalledProcessError) as refused:
        sqlite_shell(home / "tickets.db", f"INSERT INTO {table} " + values.format(id=MAX_ID))
    assert "above 2^62 is refused" in str(refused.value.stderr)
    done = swarm_inproc(home, "ticket", "create", "--title", "b", "--agent", "echo")
    assert done.returncode == 0, done.stderr
    ran = swarm_inproc(home, "run-ticket", "2", "--wait")
    assert ran.returncode == 0, ran.stderr
    with pytest.raises(subprocess.CalledProcessError) as refused:  # a row moved there
        sqlite_shell(
            home / "tickets.db",
            f"UPDATE {table} SET id = {MAX_ID} WHERE id = (SELECT max(id) FROM {table})",
        )
    assert "above 2^62 is refused" in str(refused.value.stderr)


def test_a_spent_autoincrement_fails_fast_and_is_repaired(home: Path) -> None:
    """A store that already holds such a row (written before the guard): SQLite refuses
    every insert as "database or disk is full". That is permanent, not a busy store: the
    command fails at once with exit 6 and one line naming the table. Once the row is
    deleted, the next process that opens the store lowers the sequence SQLite kept."""
    assert swarm_inproc(home, "ticket", "create", "--title", "a", "--agent", "echo").returncode == 0
    sqlite_shell(
        home / "tickets.db",
        "DROP TRIGGER ticket_events_id_guard;"
        f" INSERT INTO ticket_events (id, ticket_id, new_status) VALUES ({MAX_ID}, 1, 'open');",
    )
    started = time.monotonic()
    for argv in (
        ("ticket", "create", "--title", "b", "--agent", "echo"),
        ("run-ticket", "1", "--wait"),
    ):
        done = swarm_inproc(home, *argv, SWARM_BUSY_TIMEOUT="30")
        assert done.returncode == 6, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert "'ticket_events' has spent its AUTOINCREMENT ids" in line, line
        assert "busy" not in line and "for now" not in line, line
    assert time.monotonic() - started < 20  # not waited for as busy
    assert [r["c"] for r in query(home / "tickets.db", "SELECT count(*) AS c FROM tickets")] == [1]
    sqlite_shell(home / "tickets.db", f"DELETE FROM ticket_events WHERE id = {MAX_ID}")
    done = swarm_inproc(home, "ticket", "create", "--title", "b", "--agent", "echo")
    assert done.returncode == 0, done.stderr
    (seq,) = query(
        home / "tickets.db", "SELECT seq FROM sqlite_sequence WHERE name = 'ticket_events'"
    )
    assert seq["seq"] < 1000
    assert swarm_inproc(home, "run-ticket", "1", "--wait").returncode == 0


def test_a_spent_postgresql_sequence_is_repaired_not_waited_for(home: Path, pg_url: str) -> None:
    """PostgreSQL's equivalent: an identity sequence an operator set to its maximum fails
    `nextval` ("reached maximum value of sequence"). The store repairs it (one warning
    line) and the command succeeds at once; one that may not repair it is one line and
    exit 6, never waited for as a busy store (test_pg_sequences.py)."""
    env = {"SWARM_DATABASE_URL": pg_url}
    args = ("ticket", "create", "--title", "a", "--agent", "echo")
    assert swarm_inproc(home, *args, **env).returncode == 0
    psql(pg_url, f"SELECT setval(pg_get_serial_sequence('ticket_events', 'id'), {MAX_ID})")
    started = time.monotonic()
    done = swarm(home, *args, SWARM_BUSY_TIMEOUT="30", **env)
    assert done.returncode == 0, done.stderr
    said = [x for x in done.stderr.splitlines() if "repaired the id sequence" in x]
    assert len(said) == 1 and "ticket_events_id_seq" in said[0], done.stderr
    assert time.monotonic() - started < 20
    assert psql(pg_url, "SELECT count(*) FROM tickets").strip() == "2"
    assert psql(pg_url, "SELECT max(id) FROM ticket_events").strip() == "2"


def test_the_id_guard_migration_repairs_an_existing_store(tmp_path: Path) -> None:
    """A store at schema version 6 whose sequence SQLite kept at the maximum after the
    row was deleted: opening it adds the guard and lowers the sequence."""
    path = tmp_path / "tickets.db"
    open_store(path).close()
    sqlite_shell(
        path,
        "DROP TRIGGER tickets_id_guard; DROP TRIGGER tickets_id_guard_update;"
        " DROP TRIGGER ticket_events_id_guard; DROP TRIGGER ticket_events_id_guard_update;"
        " DROP TRIGGER workflow_runs_id_guard; DROP TRIGGER workflow_runs_id_guard_update;"
        " DROP TRIGGER step_executions_id_guard; DROP TRIGGER step_executions_id_guard_update;"
        " DROP TRIGGER step_logs_id_guard; DROP TRIGGER step_logs_id_guard_update;"
        + "".join(f" DROP TRIGGER {t}_sequence_guard;" for t in ID_TABLES)
        + " PRAGMA user_version = 6;"
        f" INSERT INTO tickets (id, title, status) VALUES ({MAX_ID}, 'edge', 'draft');"
        f" DELETE FROM tickets WHERE id = {MAX_ID};",
    )
    assert query(path, "SELECT seq FROM sqlite_sequence WHERE name = 'tickets'") == [
        {"seq": MAX_ID}
    ]
    open_store(path).close()
    assert query(path, "PRAGMA user_version") == [{"user_version": 10}]
    assert query(path, "SELECT seq FROM sqlite_sequence WHERE name = 'tickets'") == [{"seq": 0}]
    with pytest.raises(subprocess.CalledProcessError):
        sqlite_shell(path, f"INSERT INTO tickets (id, title) VALUES ({MAX_ID}, 'edge')")
