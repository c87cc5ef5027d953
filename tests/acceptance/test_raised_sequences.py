"""Another SQLite client raises an AUTOINCREMENT sequence (`sqlite_sequence.seq`) of the
ticket store, once or over and over, while the store is in use: the store lowers it where
it meets it (0008_sequence_guard.sql, 0009_ids_past_the_guard.sql, `SQLiteDatabase.run`),
so no id jumps past 2^62, no insert fails, and a running engine goes on. A sequence set
just below 2^62 is followed: ids count on past 2^62 by one, never wedged."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
from tests.acceptance.conftest import engine_ready, stop
from tests.support.cli import query, start_engine, swarm, swarm_inproc, wait_until

from swarm_engine.errors import StoreError, StoreIntegrityError
from swarm_engine.store import open_store

GUARD = 2**62
MAX_ID = 2**63 - 1
TABLES = ("tickets", "ticket_events", "workflow_runs", "step_executions", "step_logs")


def raise_sequences(db: Path, seq: int | str, tables: tuple[str, ...] = TABLES) -> None:
    """What the other client does: one UPDATE of `sqlite_sequence`, as any writer may."""
    with sqlite3.connect(db, timeout=10, isolation_level=None) as conn:
        conn.execute(
            f"UPDATE sqlite_sequence SET seq = ? WHERE name IN ({','.join('?' * len(tables))})",
            (seq, *tables),
        )
    conn.close()


def highest(db: Path) -> dict[str, int]:
    """Each table's largest id."""
    return {
        t: int(query(db, f"SELECT coalesce(max(id), 0) AS top FROM {t}")[0]["top"]) for t in TABLES
    }


@pytest.mark.parametrize(
    "seq", [GUARD - 9, GUARD - 2, GUARD - 1, GUARD, GUARD + 5, MAX_ID - 7, MAX_ID, "zzz"]
)
def test_each_insert_lowers_a_raised_sequence(tmp_path: Path, seq: int | str) -> None:
    """Each kind of row the engine writes (a ticket, its events, a run, a step, a log
    chunk), with every sequence raised just before: written with a small id, and the
    sequence lowered again (in the transaction that writes it)."""
    db = tmp_path / "tickets.db"
    store = open_store(db)
    store.engines.register("e", kind="daemon", host="h", pid=1, max_vms=1, backend="process")
    for attempt in ("a1", "a2"):  # the second time, each table has its sequence row
        raise_sequences(db, seq)
        tid = store.tickets.create(title="x", agent_id="echo")
        raise_sequences(db, seq)
        ticket = store.tickets.claim(tid, engine_id="e", attempt_id=attempt, lease_ttl=30)
        raise_sequences(db, seq)
        run_id = store.runs.start_run(
            ticket, engine_id="e", workflow_name=None, workflow_version=None, inputs={}
        )
        raise_sequences(db, seq)
        step = store.runs.add_step(
            run_id, step_id="main", agent_name="echo", agent_version="1", agent_kind="echo",
            inputs={},
        )  # fmt: skip
        raise_sequences(db, seq)
        assert store.logs.append(step, "hello\n") is not None
    store.close()
    tops = highest(db)
    if isinstance(seq, int) and seq < GUARD:  # no one's concern: ids follow it, by one
        assert all(seq < top < GUARD + 20 for top in tops.values()), tops  # (past 2^62 too)
    else:
        assert all(top < 100 for top in tops.values()), tops
        (last,) = query(db, "SELECT seq FROM sqlite_sequence WHERE name = 'step_logs'")
        assert last["seq"] == tops["step_logs"]  # the sequence lowered, then followed


def test_a_row_past_the_guard_is_counted_on_from(tmp_path: Path) -> None:
    """A row at 2^62 (the store follows a sequence set to 2^62 - 1) or above it (put there
    while the guard was dropped): later inserts get the next ids, one by one, and go on; a
    jump past 2^62 is still refused, and a sequence raised past that row is lowered to it."""
    db = tmp_path / "tickets.db"
    store = open_store(db)
    store.tickets.create(title="x", agent_id="echo")
    raise_sequences(db, GUARD - 1, ("tickets",))
    assert [store.tickets.create(title="y", agent_id="echo") for _ in range(3)] == [
        GUARD, GUARD + 1, GUARD + 2
    ]  # fmt: skip
    with sqlite3.connect(db, isolation_level=None) as conn:
        with pytest.raises(sqlite3.IntegrityError, match=r"tickets\.id above 2\^62 is refused"):
            conn.execute(f"INSERT INTO tickets (id, title) VALUES ({GUARD + 9}, 'jump')")
        conn.execute("DROP TRIGGER tickets_id_guard")
        conn.execute(f"INSERT INTO tickets (id, title) VALUES ({GUARD + 9}, 'high')")
    conn.close()
    assert store.tickets.create(title="z", agent_id="echo") == GUARD + 10
    raise_sequences(db, GUARD + 500, ("tickets",))
    assert store.tickets.create(title="z", agent_id="echo") == GUARD + 11
    store.close()
    store = open_store(db)  # a sequence that follows its rows: nothing to lower
    assert store.lower_raised_sequences() == []
    store.close()


def test_a_row_at_the_largest_id_is_named_not_written_over(tmp_path: Path) -> None:
    """A row with id 2^63 - 1 put there while the guard was dropped: no id is left, so the
    insert fails at once with one line naming the table and the row to delete (a permanent
    error, not a busy store); nothing is written, and deleting it is the cure."""
    db = tmp_path / "tickets.db"
    store = open_store(db)
    store.tickets.create(title="x", agent_id="echo")
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.execute("DROP TRIGGER tickets_id_guard")
        conn.execute(f"INSERT INTO tickets (id, title) VALUES ({MAX_ID}, 'high')")
    conn.close()
    with pytest.raises(StoreError, match=rf"delete the row with id {MAX_ID} from it") as err:
        store.tickets.create(title="y", agent_id="echo")
    assert type(err.value) is StoreIntegrityError
    assert query(db, "SELECT count(*) AS c FROM tickets") == [{"c": 2}]
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.execute(f"DELETE FROM tickets WHERE id = {MAX_ID}")
    conn.close()
    assert store.tickets.create(title="y", agent_id="echo") == 2
    store.close()


def test_an_engine_goes_on_past_a_sequence_set_just_below_the_guard(
    home: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """The tester's case (h-130, 2): `ticket_events` and `step_executions` set to 2^62 - 1
    while an engine runs. The engine writes ids 2^62, 2^62 + 1, ... and goes on: every
    ticket ends `done`, every `ticket create` succeeds, the engine is still running."""
    db = home / "tickets.db"
    proc = start_engine(home, "--max-vms", "2")
    engines.append(proc)
    engine_ready(home, proc)
    for i in range(4):
        raise_sequences(db, GUARD - 1, ("ticket_events", "step_executions"))
        made = swarm_inproc(home, "ticket", "create", "--title", f"t{i}", "--agent", "shell",
                            "--input", "command=echo ok")  # fmt: skip
        assert made.returncode == 0, made.stderr
    wait_until(
        lambda: query(db, "SELECT count(*) AS c FROM tickets WHERE status = 'done'")[0]["c"] == 4,
        60,
        "every ticket to be done",
    )
    assert proc.poll() is None
    assert highest(db)["ticket_events"] > GUARD
    made = swarm_inproc(home, "ticket", "create", "--title", "after", "--agent", "echo")
    assert made.returncode == 0, made.stderr
    out = stop(proc)
    assert proc.returncode == 0 and "Traceback" not in out, out


def test_an_engine_goes_on_while_a_client_raises_its_sequences(
    home: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """A client raises every sequence, over and over (to 2^62 + 5 and to 2^63 - 1), while
    an engine claims and runs tickets: every ticket ends `done`, the engine is still
    running, no id above 2^62 was written, and commands go on."""
    db = home / "tickets.db"
    assert swarm_inproc(home, "ticket", "create", "--title", "w", "--agent", "echo").returncode == 0
    proc = start_engine(home, "--max-vms", "2")
    engines.append(proc)
    engine_ready(home, proc)
    stop_raising = threading.Event()
    raised = [0]

    def client() -> None:
        values = (GUARD + 5, MAX_ID, GUARD, MAX_ID - 8)
        while not stop_raising.is_set():
            raise_sequences(db, values[raised[0] % len(values)])
            raised[0] += 1
            stop_raising.wait(0.02)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        for i in range(12):
            made = swarm_inproc(home, "ticket", "create", "--title", f"t{i}", "--agent", "shell",
                                "--input", "command=sleep 0.2; echo ok")  # fmt: skip
            assert made.returncode == 0, made.stderr
        wait_until(
            lambda: (
                proc.poll() is None
                and query(db, "SELECT count(*) AS c FROM tickets WHERE status = 'done'")[0]["c"]
                == 13
            ),
            90,
            "every ticket to be done",
        )
        assert raised[0] > 10
    finally:
        stop_raising.set()
        thread.join(30)
    assert proc.poll() is None
    assert [r["status"] for r in query(db, "SELECT DISTINCT status FROM tickets")] == ["done"]
    tops = highest(db)  # the sequences may be left raised: the rows are what count
    assert all(top < 1000 for top in tops.values()), tops
    made = swarm_inproc(home, "ticket", "create", "--title", "after", "--agent", "echo")
    assert made.returncode == 0, made.stderr
    out = stop(proc)
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert "lowered the id sequence of" in out, out  # the engine met them itself


@pytest.mark.parametrize("seq", [GUARD + 5, "zzz"])
def test_a_running_engine_lowers_a_raised_sequence_for_outside_writers(
    home: Path, engines: list[subprocess.Popen[str]], seq: int | str
) -> None:
    """An outside writer's insert into a table whose sequence another client raised is
    refused (`... id sequence at or above 2^62 is refused`) only until a running engine
    lowers it (every heartbeat interval), even when the engine itself inserts nothing into
    that table meanwhile."""
    db = home / "tickets.db"
    assert swarm_inproc(home, "ticket", "create", "--title", "w", "--agent", "echo").returncode == 0
    raise_sequences(db, seq, ("tickets",))
    with pytest.raises(sqlite3.IntegrityError, match=r"tickets\.id sequence at or above 2\^62"):
        insert_ticket(db)  # refused: no id above 2^62 is given
    proc = start_engine(home, "--max-vms", "1", SWARM_HEARTBEAT_INTERVAL="0.3")
    engines.append(proc)
    engine_ready(home, proc)  # (its open lowered that one)
    raise_sequences(db, seq, ("tickets",))

    def inserted() -> bool:
        try:
            insert_ticket(db)
        except sqlite3.IntegrityError:
            return False
        return True

    wait_until(inserted, 30, "the engine to lower the sequence")
    wait_until(
        lambda: query(db, "SELECT count(*) AS c FROM tickets WHERE status = 'done'")[0]["c"] == 2,
        30,
        "the outside writer's ticket to run",
    )
    assert highest(db)["tickets"] == 2
    assert proc.poll() is None
    out = stop(proc)
    assert "lowered the id sequence of tickets" in out, out


def insert_ticket(db: Path) -> None:
    conn = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        conn.execute("INSERT INTO tickets (title, status, agent_id) VALUES ('o', 'open', 'echo')")
    finally:
        conn.close()


def test_a_command_says_in_one_line_which_sequences_it_lowered(home: Path) -> None:
    """Every sequence raised: the next command lowers them all when it opens the store
    and says so in one warning line naming each table, not a line each (h-130 report,
    11); its output follows."""
    db = home / "tickets.db"
    assert swarm_inproc(home, "ticket", "create", "--title", "w", "--agent", "shell",
                        "--input", "command=echo hi").returncode == 0  # fmt: skip
    store = open_store(db)  # a row in each table, so each has its sequence
    store.engines.register("e", kind="daemon", host="h", pid=1, max_vms=1, backend="process")
    ticket = store.tickets.claim(1, engine_id="e", attempt_id="a", lease_ttl=30)
    run_id = store.runs.start_run(
        ticket, engine_id="e", workflow_name=None, workflow_version=None, inputs={}
    )
    step = store.runs.add_step(
        run_id, step_id="main", agent_name="shell", agent_version="1", agent_kind="shell",
        inputs={},
    )  # fmt: skip
    assert store.logs.append(step, "hello\n") is not None
    store.close()
    raise_sequences(db, GUARD + 5)
    listed = swarm(home, "ticket", "list")
    assert listed.returncode == 0, listed.stderr
    said = [x for x in listed.stderr.splitlines() if "lowered" in x]
    assert len(said) == 1, listed.stderr
    assert all(t in said[0] for t in TABLES), said
    assert highest(db)["tickets"] == 1
