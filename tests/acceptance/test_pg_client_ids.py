"""A PostgreSQL client writes rows with ids of its own, ahead of the tables' identity
sequences (`INSERT INTO tickets (id, ...) VALUES (2, ...)`): whatever those rows hold
concerns them alone. Other tickets' writes (`ticket create`, an engine's claims, runs,
steps and logs) go through at the first try, the store raising the sequence past the
client's rows where a write meets one (`store/pgsequences.py`); a unique violation of
any other constraint stays an error; and `/metrics`' tally, having seen a client's row
far ahead, still counts the engine's later rows (`service/metrics.py`)."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest
from tests.acceptance.conftest import stop
from tests.support.cli import start_engine, swarm_inproc, wait_until
from tests.support.postgres import pg_query, psql

from swarm_engine.errors import StoreIntegrityError
from swarm_engine.records import Usage
from swarm_engine.service.metrics import Tally
from swarm_engine.store import Store, open_store

TABLES = ("tickets", "ticket_events", "workflow_runs", "step_executions", "step_logs")


def last_value(url: str, table: str) -> int | None:
    rows = pg_query(
        url, f"SELECT pg_sequence_last_value(pg_get_serial_sequence('{table}', 'id')) AS v"
    )
    value = rows[0]["v"]
    return None if value is None else int(value)


def top(url: str, table: str) -> int:
    return int(pg_query(url, f"SELECT coalesce(max(id), 0) AS v FROM {table}")[0]["v"])


def client_rows(url: str) -> None:
    """Rows with explicit ids, each table's next few and one 1000 past them, as `psql`
    writes them (drafts, failed runs and steps: nothing an engine picks up)."""
    nxt = {t: max(last_value(url, t) or 0, top(url, t)) + 1 for t in TABLES}
    sql = []
    for i in (0, 1, 2, 1000):
        sql.append(
            f"INSERT INTO tickets (id, title, agent_id) VALUES ({nxt['tickets'] + i}, 'client',"
            " 'echo')"
        )
    ticket = nxt["tickets"]
    for i in (0, 1, 2, 1000):
        # its draft tickets' own event rows above took the next ids by the sequence
        sql.append(
            "INSERT INTO ticket_events (id, ticket_id, new_status) VALUES"
            f" ({nxt['ticket_events'] + 4 + i}, {ticket}, 'draft')"
        )
        sql.append(
            "INSERT INTO workflow_runs (id, ticket_id, attempt, attempt_id, execution_mode,"
            f" status) VALUES ({nxt['workflow_runs'] + i}, {ticket}, 1,"
            f" 'client-{nxt['workflow_runs'] + i}', 'single', 'failed')"
        )
    run = nxt["workflow_runs"]
    for i in (0, 1, 2, 1000):
        sql.append(
            "INSERT INTO step_executions (id, run_id, step_id, agent_name, agent_version,"
            f" agent_kind, status) VALUES ({nxt['step_executions'] + i}, {run}, 'client',"
            " 'echo', '1', 'echo', 'failed')"
        )
    step = nxt["step_executions"]
    for i in (0, 1, 2, 1000):
        sql.append(
            "INSERT INTO step_logs (id, step_execution_id, data) VALUES"
            f" ({nxt['step_logs'] + i}, {step}, 'client')"
        )
    psql(url, "; ".join(sql))
    # every sequence is behind a client's row now
    assert all((last_value(url, t) or 0) < top(url, t) for t in TABLES)


def test_rows_a_client_wrote_ahead_fail_no_other_tickets_writes(
    pg_url: str, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """With a client's rows ahead of every id sequence (the next ids, and one 1000 past
    them), `ticket create` succeeds at once each time (not exit 6 with `duplicate key
    value violates unique constraint "tickets_pkey"`), and an engine claims, runs and
    records each ticket at its first attempt; the client's rows are all still there."""
    home = tmp_path / "home"
    env = {"SWARM_DATABASE_URL": pg_url}
    assert swarm_inproc(home, "status", "--init", **env).returncode == 0
    made = []

    def create(title: str) -> None:
        out = swarm_inproc(home, "ticket", "create", "--title", title, "--agent", "shell",
                           "--input", "command=echo ok", **env)  # fmt: skip
        assert (out.returncode, out.stderr) == (0, ""), out.stderr
        made.append(int(out.stdout.split()[1]))

    create("first")
    proc = start_engine(home, "--max-vms", "2", **env)
    engines.append(proc)
    wait_until(
        lambda: (
            pg_query(pg_url, "SELECT status FROM tickets WHERE id = %(id)s", {"id": made[0]})[0][
                "status"
            ]
            == "done"
        ),
        120,
        "the first ticket to be done",
    )
    stop(proc)
    assert proc.returncode == 0
    client_rows(pg_url)
    for i in range(3):
        create(f"then {i}")
    client_rows(pg_url)  # ahead again, of the engine's claims, runs, steps and logs
    proc = start_engine(home, "--max-vms", "2", **env)
    engines.append(proc)
    wait_until(
        lambda: (
            pg_query(
                pg_url,
                "SELECT count(*) AS c FROM tickets WHERE status = 'done' AND title <> 'client'",
            )[0]["c"]
            == 4
        ),
        120,
        "every ticket to be done",
    )
    out = stop(proc)
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert "cannot be claimed" not in out and "duplicate key" not in out, out
    tickets = pg_query(
        pg_url, "SELECT id, status, attempts FROM tickets WHERE title <> 'client' ORDER BY id"
    )
    assert [(t["id"], t["status"], t["attempts"]) for t in tickets] == [
        (t, "done", 1) for t in made
    ]
    steps = pg_query(
        pg_url,
        "SELECT r.ticket_id, count(DISTINCT r.id) AS runs, count(DISTINCT s.id) AS steps,"
        " bool_and(s.status = 'done') AS ok, count(l.id) AS logs"
        " FROM workflow_runs r JOIN step_executions s ON s.run_id = r.id"
        " LEFT JOIN step_logs l ON l.step_execution_id = s.id"
        " WHERE r.attempt_id NOT LIKE 'client-%%' GROUP BY 1 ORDER BY 1",
    )
    assert [(s["ticket_id"], s["runs"], s["steps"], s["ok"]) for s in steps] == [
        (t, 1, 1, True) for t in made
    ]
    assert all(s["logs"] >= 1 for s in steps), steps  # each step's output recorded
    counts = pg_query(
        pg_url,
        "SELECT (SELECT count(*) FROM tickets WHERE title = 'client') AS tickets,"
        " (SELECT count(*) FROM workflow_runs WHERE attempt_id LIKE 'client-%%') AS runs,"
        " (SELECT count(*) FROM step_executions WHERE step_id = 'client') AS steps,"
        " (SELECT count(*) FROM step_logs WHERE data = 'client') AS logs",
    )[0]
    assert counts == {"tickets": 8, "runs": 8, "steps": 8, "logs": 8}, counts
    failed = pg_query(pg_url, "SELECT count(*) AS c FROM ticket_events WHERE new_status = 'failed'")
    assert failed[0]["c"] == 0


def test_a_unique_violation_of_another_constraint_stays_an_error(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A run with an attempt id in use (`workflow_runs_attempt_id_key`), with the runs'
    sequence behind a client's row at the same time: refused with that constraint's
    line, in a transaction and out of one, and the sequence is not touched (only a
    primary key's violation is a sign of it); the heartbeat's check repairs it."""
    store = open_store(pg_url)
    tid = store.tickets.create(title="x", agent_id="echo")
    insert = (
        "INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, execution_mode)"
        " VALUES (%(t)s, 1, 'same', 'single')"
    )
    store.db.run(insert, {"t": tid})
    psql(
        pg_url,
        "INSERT INTO workflow_runs (id, ticket_id, attempt, attempt_id, execution_mode)"
        f" VALUES (50, {tid}, 1, 'client', 'single')",
    )  # far enough ahead that the next ids are free
    caplog.set_level(logging.WARNING, logger="swarm_engine")
    with pytest.raises(StoreIntegrityError, match="workflow_runs_attempt_id_key"):
        store.db.run(insert, {"t": tid})
    with store.transaction():
        kept = store.tickets.create(title="kept", agent_id="echo")
        with pytest.raises(StoreIntegrityError, match="workflow_runs_attempt_id_key"):
            store.db.run(insert, {"t": tid})
    assert store.tickets.get(kept).title == "kept"
    assert "repaired the id sequence" not in caplog.text
    assert (last_value(pg_url, "workflow_runs") or 0) < 50  # still behind the client's row
    assert store.lower_raised_sequences() == ["workflow_runs"]
    assert last_value(pg_url, "workflow_runs") == 50
    store.close()


def _step(store: Store, run_id: int, tokens: int) -> int:
    step = store.runs.add_step(
        run_id, step_id="main", agent_name="echo", agent_version="1", agent_kind="echo",
        inputs={},
    )  # fmt: skip
    store.runs.step_finished(
        step, status="done", outputs=None, exit_code=0, error=None,
        usage=Usage(input_tokens=tokens),
    )  # fmt: skip
    return step


def test_a_tally_past_a_client_row_far_ahead_counts_the_engines_later_steps(
    pg_url: str,
) -> None:
    """A client's step row with id 900002 (as test_api.py writes one) while the engine's
    ids are small: the tally does not walk past the id the sequence last handed out, so
    the engine's later steps are counted; the client's row is counted once the sequence
    passes it (here after the heartbeat's check raises the sequence to it). Each step
    has its own token count, so the total tells which were counted."""
    store = open_store(pg_url)
    store.engines.register("e", kind="daemon", host="h", pid=1, max_vms=1, backend="process")
    tid = store.tickets.create(title="x", agent_id="echo")
    ticket = store.tickets.claim(tid, engine_id="e", attempt_id="a1", lease_ttl=300)
    run_id = store.runs.start_run(
        ticket, engine_id="e", workflow_name=None, workflow_version=None, inputs={}
    )
    tally = Tally()

    def counted() -> int:
        psql(pg_url, "UPDATE step_executions SET queued_at = now() - interval '1 hour'")
        tally.refresh(store, lambda *_: "m")
        return tally.tokens.get(("m", "input"), 0)

    assert _step(store, run_id, 1) == 1
    psql(
        pg_url,
        "INSERT INTO step_executions (id, run_id, step_id, agent_name, agent_version,"
        f" agent_kind, status, input_tokens) VALUES (900002, {run_id}, 'far', 'echo', '1',"
        " 'echo', 'done', 100)",
    )
    assert counted() == 1  # the engine's step; the client's is ahead of the sequence
    assert _step(store, run_id, 10) == 2
    assert counted() == 11  # (was never counted: the mark had passed 900002)
    assert store.lower_raised_sequences() == ["step_executions"]
    assert _step(store, run_id, 1000) == 900003
    assert counted() == 1111  # the client's row too, once, and the one after it
    assert counted() == 1111
    assert tally.step_mark == 900003
    store.close()


def test_a_tally_counts_no_client_row_near_the_guard(pg_url: str) -> None:
    """A client's finished step with id 2^62 - 1: the heartbeat's check leaves the
    sequence where it is (it would give 2^62 next, refused), the engine's later steps
    are written and counted, the client's row never (ids from 2^62 - 2^32 are a
    client's)."""
    store = open_store(pg_url)
    store.engines.register("e", kind="daemon", host="h", pid=1, max_vms=1, backend="process")
    tid = store.tickets.create(title="x", agent_id="echo")
    ticket = store.tickets.claim(tid, engine_id="e", attempt_id="a1", lease_ttl=300)
    run_id = store.runs.start_run(
        ticket, engine_id="e", workflow_name=None, workflow_version=None, inputs={}
    )
    assert _step(store, run_id, 1) == 1
    psql(
        pg_url,
        "INSERT INTO step_executions (id, run_id, step_id, agent_name, agent_version,"
        f" agent_kind, status, input_tokens) VALUES ({2**62 - 1}, {run_id}, 'far', 'echo',"
        " '1', 'echo', 'done', 100)",
    )
    assert store.lower_raised_sequences() == []
    assert _step(store, run_id, 10) == 2
    psql(pg_url, "UPDATE step_executions SET queued_at = now() - interval '1 hour'")
    tally = Tally()
    tally.refresh(store, lambda *_: "m")
    assert tally.tokens.get(("m", "input"), 0) == 11
    assert tally.step_mark == 2
    store.close()
