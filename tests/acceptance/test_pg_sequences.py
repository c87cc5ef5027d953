"""Another PostgreSQL client wedges an id sequence of the ticket store (`setval` to its
maximum, `ALTER SEQUENCE ... MAXVALUE/INCREMENT/CYCLE`, a row of its own with an id ahead
of the sequence), once or over and over, while the
store is in use: the store repairs it where it meets it and runs the statement again
(`store/pgsequences.py`), so no insert fails and a running engine goes on; a user that
may not repair it gets one line naming the sequence and what to run."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from pathlib import Path

import pytest
from tests.acceptance.conftest import stop
from tests.support.cli import start_engine, swarm_inproc, wait_until
from tests.support.postgres import pg_query, psql

from swarm_engine.errors import StoreIntegrityError
from swarm_engine.store import open_store

MAX_ID = 2**63 - 1
GUARD = 2**62
TABLES = ("tickets", "ticket_events", "workflow_runs", "step_executions", "step_logs")
WEDGES = {
    "max": "SELECT setval(pg_get_serial_sequence('{t}', 'id'), 9223372036854775807)",
    "near": "SELECT setval(pg_get_serial_sequence('{t}', 'id'), 9223372036854775806)",
    "maxvalue": "DO $$ BEGIN EXECUTE format('ALTER SEQUENCE %s MAXVALUE %s',"
    " pg_get_serial_sequence('{t}', 'id'),"
    " greatest(coalesce(pg_sequence_last_value(pg_get_serial_sequence('{t}', 'id')::regclass), 2), 2));"
    " END $$",
    "increment": "DO $$ BEGIN EXECUTE format('ALTER SEQUENCE %s INCREMENT 1000000000000',"
    " pg_get_serial_sequence('{t}', 'id')); END $$",
    "ahead": "DO $$ BEGIN {ahead}; EXCEPTION WHEN unique_violation THEN NULL; END $$",
}
NEXT = (
    "least(greatest(coalesce(pg_sequence_last_value(pg_get_serial_sequence('{t}', 'id')"
    "::regclass), 0), (SELECT coalesce(max(id), 0) FROM {t} WHERE id < 4611686018427387904)),"
    " (SELECT coalesce(max(id), 0) FROM {t} WHERE id < 4611686018427387904) + 999) + 1"
)
"""The id the sequence hands out next (or, when it is behind, the one after the largest;
when wedged high, 1000 past the largest): where the client writes its row."""
AHEAD = {
    "tickets": "INSERT INTO tickets (id, title, agent_id) SELECT {next}, 'client', 'echo'",
    "ticket_events": "INSERT INTO ticket_events (id, ticket_id, new_status)"
    " SELECT {next}, min(id), 'draft' FROM tickets HAVING count(*) > 0",
    "workflow_runs": "INSERT INTO workflow_runs (id, ticket_id, attempt, attempt_id,"
    " execution_mode, status) SELECT {next}, min(id), 1, 'client-' || {next}, 'single',"
    " 'failed' FROM tickets HAVING count(*) > 0",
    "step_executions": "INSERT INTO step_executions (id, run_id, step_id, agent_name,"
    " agent_version, agent_kind, status) SELECT {next}, min(id), 'client', 'echo', '1',"
    " 'echo', 'failed' FROM workflow_runs HAVING count(*) > 0",
    "step_logs": "INSERT INTO step_logs (id, step_execution_id, data)"
    " SELECT {next}, min(id), 'client' FROM step_executions HAVING count(*) > 0",
}
"""A client's row with an explicit id ahead of the table's sequence (its `nextval` then
hands out that id again); not written when it is refused (its ticket's event row may
meet an earlier client row in `ticket_events` first: the client's own trouble)."""


def wedge(url: str, how: str, tables: tuple[str, ...] = TABLES) -> None:
    """What the other client does, with `psql`."""
    for t in tables:
        try:
            ahead = AHEAD[t].format(next=NEXT.format(t=t))
            psql(url, WEDGES[how].format(t=t, ahead=ahead))
        except subprocess.CalledProcessError as exc:
            raise AssertionError(exc.stderr) from None


def highest(url: str) -> dict[str, int]:
    return {
        t: int(pg_query(url, f"SELECT coalesce(max(id), 0) AS top FROM {t}")[0]["top"])
        for t in TABLES
    }


@pytest.mark.parametrize("how", sorted(WEDGES))
def test_each_insert_repairs_a_wedged_sequence(pg_url: str, how: str) -> None:
    """Each kind of row the engine writes (a ticket, its events by trigger, a run, a step,
    a log chunk, in and out of transactions), with every sequence wedged just before:
    written with a small id, the sequence put back."""
    store = open_store(pg_url)
    store.engines.register("e", kind="daemon", host="h", pid=1, max_vms=1, backend="process")
    for attempt in ("a1", "a2"):
        wedge(pg_url, how)
        tid = store.tickets.create(title="x", agent_id="echo")
        wedge(pg_url, how)
        ticket = store.tickets.claim(tid, engine_id="e", attempt_id=attempt, lease_ttl=30)
        wedge(pg_url, how)
        run_id = store.runs.start_run(
            ticket, engine_id="e", workflow_name=None, workflow_version=None, inputs={}
        )
        wedge(pg_url, how)
        step = store.runs.add_step(
            run_id, step_id="main", agent_name="echo", agent_version="1", agent_kind="echo",
            inputs={},
        )  # fmt: skip
        wedge(pg_url, how)
        assert store.logs.append(step, "hello\n") is not None
    tops = highest(pg_url)
    if how == "increment":  # no insert fails: ids jump (below 2^62) until the heartbeat's
        assert all(top < GUARD for top in tops.values()), tops  # check puts it back
        assert store.lower_raised_sequences() == list(TABLES)
    else:  # (a MAXVALUE not yet reached is put back by that check too)
        assert all(top < 100 for top in tops.values()), tops
        store.lower_raised_sequences()
    assert store.lower_raised_sequences() == []  # each repaired
    store.close()
    seqs = pg_query(pg_url, "SELECT increment_by, max_value FROM pg_sequences")
    assert {(s["increment_by"], s["max_value"]) for s in seqs} == {(1, MAX_ID)}, seqs


def test_a_write_wedged_mid_transaction_keeps_the_writes_before_it(pg_url: str) -> None:
    """In one transaction, tickets are made while another client wedges the events'
    sequence between them: each failing insert is rolled back to the savepoint set just
    before it (not to one before an earlier write), repaired and run again; every ticket
    and its event row are there once, with small ids."""
    store = open_store(pg_url)
    with store.transaction():
        made = [store.tickets.create(title="first", agent_id="echo")]
        for i in range(3):
            wedge(pg_url, "max", ("ticket_events",))
            made.append(store.tickets.create(title=f"then {i}", agent_id="echo"))
            made.append(store.tickets.create(title=f"and {i}", agent_id="echo"))
    assert made == sorted(set(made)) and made[-1] < 20, made  # (a failed try spends an id)
    rows = pg_query(pg_url, "SELECT ticket_id, new_status FROM ticket_events ORDER BY id")
    assert [(r["ticket_id"], r["new_status"]) for r in rows] == [(t, "open") for t in made]
    assert highest(pg_url)["ticket_events"] < 20
    store.close()


def test_a_refused_write_in_a_transaction_leaves_the_rest_standing(pg_url: str) -> None:
    """A write the database refuses for another reason (a duplicate id) is undone alone,
    back to its savepoint: the transaction's other writes are kept and it goes on."""
    store = open_store(pg_url)
    with store.transaction():
        first = store.tickets.create(title="first", agent_id="echo")
        with pytest.raises(StoreIntegrityError, match="duplicate key"):
            store.db.run(
                "INSERT INTO tickets (id, title, agent_id) VALUES (%(id)s, 'again', 'echo')",
                {"id": first},
            )
        second = store.tickets.create(title="second", agent_id="echo")
    assert [store.tickets.get(t).title for t in (first, second)] == ["first", "second"]
    store.close()


def test_the_heartbeat_check_repairs_a_sequence_for_outside_writers(pg_url: str) -> None:
    """A wedged sequence no engine insert meets is repaired by the engine's heartbeat
    check (`Store.lower_raised_sequences`), so an outside writer's insert goes through."""
    store = open_store(pg_url)
    store.tickets.create(title="x", agent_id="echo")
    wedge(pg_url, "max", ("tickets",))
    with pytest.raises(subprocess.CalledProcessError) as refused:
        psql(pg_url, "INSERT INTO tickets (title, status, agent_id) VALUES ('o', 'open', 'echo')")
    assert "reached maximum value" in refused.value.stderr
    assert store.lower_raised_sequences() == ["tickets"]
    assert store.lower_raised_sequences() == []
    psql(pg_url, "INSERT INTO tickets (title, status, agent_id) VALUES ('o', 'open', 'echo')")
    assert highest(pg_url)["tickets"] == 2
    store.close()


def test_a_user_that_may_not_repair_it_gets_one_line(pg_url: str, tmp_path: Path) -> None:
    """A user with rights on the tables but not to alter or set the sequence: one line
    naming the sequence and the statement its owner can run, exit 6, nothing written; the
    owner's repair is the cure."""
    open_store(pg_url).close()
    psql(pg_url, "DROP ROLE IF EXISTS seq_user; CREATE ROLE seq_user LOGIN;"
                 " GRANT USAGE, CREATE ON SCHEMA public TO seq_user;"
                 " GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO seq_user;"
                 " GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO seq_user")  # fmt: skip
    url = pg_url.replace("postgres@", "seq_user@", 1)
    wedge(pg_url, "max", ("tickets",))
    home = tmp_path / "home"
    made = swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "echo",
                        SWARM_DATABASE_URL=url)  # fmt: skip
    assert made.returncode == 6, made.stderr
    lines = made.stderr.strip().splitlines()
    assert len(lines) == 1, made.stderr
    assert "tickets_id_seq" in lines[0] and "may not repair it" in lines[0], lines
    assert "SELECT setval('tickets_id_seq'" in lines[0], lines
    assert "busy" not in lines[0] and "for now" not in lines[0], lines
    assert highest(pg_url)["tickets"] == 0
    store = open_store(pg_url)
    assert store.lower_raised_sequences() == ["tickets"]
    store.close()
    made = swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "echo",
                        SWARM_DATABASE_URL=url)  # fmt: skip
    assert made.returncode == 0, made.stderr
    wedge(pg_url, "increment", ("tickets",))  # the heartbeat's check: refused alike
    store = open_store(url)
    with pytest.raises(StoreIntegrityError, match=r"tickets_id_seq .* may not repair it"):
        store.lower_raised_sequences()
    store.close()


def test_an_engine_goes_on_while_a_client_wedges_its_sequences(
    pg_url: str, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """A client wedges every sequence the engine inserts into, over and over, each way,
    while an engine claims and runs tickets made by `ticket create`: every ticket ends
    `done`, once; the engine is still running; no id at or above 2^62 was written (ids
    jump, below it, while INCREMENT is raised, until the engine's heartbeat puts it back)."""
    home = tmp_path / "home"
    env = {"SWARM_DATABASE_URL": pg_url}
    assert swarm_inproc(home, "status", "--init", **env).returncode == 0
    proc = start_engine(home, "--max-vms", "2", SWARM_HEARTBEAT_INTERVAL="0.5", **env)
    engines.append(proc)
    stop_wedging = threading.Event()
    wedged = [0]

    def client() -> None:
        ways = ("max", "increment", "near", "maxvalue", "ahead")
        while not stop_wedging.is_set():
            with contextlib.suppress(AssertionError):  # (setval past a MAXVALUE it set)
                wedge(pg_url, ways[wedged[0] % len(ways)])
            wedged[0] += 1
            stop_wedging.wait(0.05)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        for i in range(10):
            before = wedged[0]
            wait_until(lambda b=before: wedged[0] > b, 60, "the client to wedge them again")
            made = swarm_inproc(home, "ticket", "create", "--title", f"t{i}", "--agent", "shell",
                                "--input", "command=sleep 0.2; echo ok", **env)  # fmt: skip
            assert made.returncode == 0, made.stderr
        wait_until(
            lambda: (
                proc.poll() is None
                and pg_query(pg_url, "SELECT count(*) AS c FROM tickets WHERE status = 'done'")[0][
                    "c"
                ]
                == 10
            ),
            120,
            "every ticket to be done",
        )
    finally:
        stop_wedging.set()
        thread.join(60)
    assert proc.poll() is None
    runs = pg_query(
        pg_url,
        "SELECT ticket_id, count(*) AS c FROM workflow_runs"
        " WHERE attempt_id NOT LIKE 'client-%%' GROUP BY 1",
    )  # (the client's own runs left out)
    assert len(runs) == 10 and {r["c"] for r in runs} == {1}, runs  # each ran once
    assert all(top < GUARD for top in highest(pg_url).values()), highest(pg_url)
    out = stop(proc)
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert "repaired the id sequence" in out, out


CEILING = 2**62 - 2**32


@pytest.mark.parametrize("how", ["row", "setval"])
@pytest.mark.parametrize("table", TABLES)
def test_ids_just_below_the_guard_leave_the_sequence_room(
    pg_url: str, table: str, how: str
) -> None:
    """A client's row at 2^62 - 1 (the guard lets it in), or the sequence set a few ids
    below 2^62, never wedges the table: the heartbeat check and each insert keep the
    sequence below 2^62 - 2^32 with room above it, so every later insert goes through
    (before, the sequence was raised to 2^62 - 1 and every next id refused)."""
    store = open_store(pg_url)
    plain = {t: AHEAD[t].format(next=f"nextval(pg_get_serial_sequence('{t}', 'id'))")
             for t in TABLES}  # fmt: skip
    for t in TABLES:  # a row in each, for the next table's reference
        psql(pg_url, plain[t])
    if how == "row":
        psql(pg_url, AHEAD[table].format(next=GUARD - 1))
    else:
        psql(pg_url, f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {GUARD - 4})")
    for _ in range(6):
        store.lower_raised_sequences()  # what a running engine's heartbeat does
        psql(pg_url, plain[table])  # raises CalledProcessError when refused
    store.tickets.create(title="after", agent_id="echo")
    last = pg_query(
        pg_url, f"SELECT pg_sequence_last_value(pg_get_serial_sequence('{table}', 'id')) AS v"
    )[0]["v"]
    assert last < CEILING, last
    assert store.lower_raised_sequences() == []
    store.close()
