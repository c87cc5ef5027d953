"""Rows written by other SQLite clients are untrusted input: each odd row fails (or is
shown) on its own, with a one-line reason naming the field; the engine and every command
go on."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.acceptance.conftest import engine_ready, status_of, stop
from tests.support.cli import query, start_engine, swarm, swarm_inproc, wait_until

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}


def raw_insert(db: Path, columns: dict[str, object], *, past_checks: bool = False) -> int:
    """Insert a ticket exactly as another client might (optionally past the CHECKs)."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        if past_checks:
            conn.execute("PRAGMA ignore_check_constraints = ON")
        names = ", ".join(columns)
        marks = ", ".join("?" * len(columns))
        cur = conn.execute(
            f"INSERT INTO tickets ({names}) VALUES ({marks})", tuple(columns.values())
        )
        assert cur.lastrowid is not None
        return cur.lastrowid
    finally:
        conn.close()


BAD_BYTES = b"hi\xc3\x28\xff"
# (what the row holds, the columns, whether it needs to slip past a CHECK, the field named)
ODD_ROWS = [
    ("invalid UTF-8 in a text column", {"description": BAD_BYTES.decode("latin-1")}, False, None),
    ("text in a numeric column", {"priority": "high"}, False, "priority"),
    ("inputs that are a JSON list", {"inputs": "[1, 2]"}, False, "inputs"),
    ("inputs that are a JSON string", {"inputs": '"text"'}, False, "inputs"),
    ("inputs that are not JSON (past the CHECK)", {"inputs": "{nope"}, True, "inputs"),
    ("an unknown execution mode (past the CHECK)", {"execution_mode": "swarm"}, True, "constraint"),
    ("max_attempts of zero (past the CHECK)", {"max_attempts": 0}, True, "max_attempts"),
    ("a negative timeout", {"timeout_seconds": -5}, False, "timeout_seconds"),
    ("open with its attempts spent", {"attempts": 100, "max_attempts": 3}, False, "max_attempts"),
    ("a negative count of attempts", {"attempts": -5}, False, "attempts is -5, not a count"),
    ("a blob for a title", {"title": b"\x00\x01binary"}, False, "title"),
    ("a time before year 1", {"created_at": "0000-01-01 00:00:00"}, False, "created_at"),
]


def insert_odd(db: Path, columns: dict[str, object], past_checks: bool) -> int:
    row: dict[str, object] = {"title": "odd", "status": "open", "agent_id": "echo"}
    row.update(columns)
    if "description" in columns:  # stored as TEXT holding bytes that are not UTF-8
        conn = sqlite3.connect(db, timeout=30, isolation_level=None)
        try:
            cur = conn.execute(
                "INSERT INTO tickets (title, description, status, agent_id)"
                " VALUES ('odd', CAST(? AS TEXT), 'open', 'echo')",
                (BAD_BYTES,),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid
        finally:
            conn.close()
    return raw_insert(db, row, past_checks=past_checks)


def assert_commands_show(home: Path, ticket_id: int) -> None:
    for args in (
        ("ticket", "list"),
        ("ticket", "list", "--json"),
        ("ticket", "show", str(ticket_id)),
        ("ticket", "show", str(ticket_id), "--json"),
        ("status",),
        ("status", "--json"),
    ):
        done = swarm_inproc(home, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stdout + done.stderr, args


@pytest.mark.parametrize(
    ("what", "columns", "past_checks", "field"), ODD_ROWS, ids=[r[0] for r in ODD_ROWS]
)
def test_an_odd_row_fails_alone_and_the_engine_goes_on(
    home: Path, what: str, columns: dict[str, object], past_checks: bool, field: str | None
) -> None:
    db = home / "tickets.db"
    bad = insert_odd(db, columns, past_checks)
    good = raw_insert(
        db, {"title": "good", "status": "open", "agent_id": "echo", "inputs": '{"k": 1}'}
    )
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=60, **FAST)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    rows = {r["id"]: r for r in query(db, "SELECT id, status, error, attempts FROM tickets")}
    assert rows[good]["status"] == "done"
    assert rows[bad]["status"] == "failed", rows[bad]
    error = rows[bad]["error"]
    assert "\n" not in error and (f"ticket {bad}" in error or "constraint" in error)
    assert (field or "description") in error, error
    assert not query(db, "SELECT 1 FROM workflow_runs WHERE status = 'running'")
    assert_commands_show(home, bad)
    # a restart finds nothing to do: no crash loop, the failed row stays failed
    again = swarm(home, "start", "--foreground", "--until-idle", timeout=60, **FAST)
    assert again.returncode == 0 and "running 0 ticket" in again.stdout, again.stdout + again.stderr
    assert status_of(home, bad) == "failed"


def test_run_ticket_refuses_an_attempt_past_max_attempts_and_changes_nothing(
    home: Path,
) -> None:
    """An open row whose attempts were written past its max_attempts is refused before
    the claim: one line naming the way out, a non-zero exit, the row as it was."""
    db = home / "tickets.db"
    spent = raw_insert(db, {"title": "spent", "status": "open", "agent_id": "echo",
                            "attempts": 3, "max_attempts": 3})  # fmt: skip
    done = swarm(home, "run-ticket", str(spent), "--wait", timeout=60)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr == (
        f"error: ticket {spent}: this would be attempt 4 of at most 3 (max_attempts); cancel"
        f" it, then 'swarm-engine ticket reopen {spent}' counts its attempts from 0 again\n"
    )
    [row] = query(db, "SELECT status, attempts, error FROM tickets WHERE id = ?", spent)
    assert dict(row) == {"status": "open", "attempts": 3, "error": None}
    assert not query(db, "SELECT 1 FROM workflow_runs WHERE ticket_id = ?", spent)
    # the advice works: cancelled, reopened, it runs as its first attempt
    for step in (("ticket", "cancel"), ("ticket", "reopen"), ("run-ticket",)):
        done = swarm(home, *step, str(spent), *(["--wait"] if step == ("run-ticket",) else []))
        assert done.returncode == 0, (step, done.stdout + done.stderr)
    [row] = query(db, "SELECT status, attempts FROM tickets WHERE id = ?", spent)
    assert dict(row) == {"status": "done", "attempts": 1}


def test_a_blob_holding_json_text_is_said_to_be_binary(home: Path) -> None:
    """Inputs written with the sqlite3 shell's `readfile()` are a BLOB (its JSON passes
    the CHECK): the ticket failed as "not valid UTF-8 text", which its bytes were. It
    fails saying it is binary, and how to store text instead."""
    db = home / "tickets.db"
    bad = raw_insert(db, {"title": "blob", "status": "open", "agent_id": "echo",
                          "inputs": b'{"text": "plain ascii"}'})  # fmt: skip
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=60, **FAST)
    assert done.returncode == 0, done.stdout + done.stderr
    [row] = query(db, "SELECT status, error FROM tickets WHERE id = ?", bad)
    assert row["status"] == "failed"
    assert row["error"] == (
        f"ticket {bad} row is malformed: inputs: binary (a BLOB of 23 bytes), not text:"
        " write CAST(x AS TEXT)"
    )
    assert_commands_show(home, bad)


@pytest.mark.parametrize(
    "stamp",
    ["CURRENT_TIMESTAMP", "'2026-11-30T23:00:00+01:00'", "1764547200", "1764547200.5",
     "julianday('now')", "'2026-11-30'", "'yesterday'", "X'00ff'"],
)  # fmt: skip
def test_timestamps_in_any_form_are_shown(home: Path, stamp: str) -> None:
    db = home / "tickets.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "INSERT INTO tickets (title, status, agent_id, created_at, updated_at)"
        f" VALUES ('stamped', 'draft', 'echo', {stamp}, {stamp})"
    )
    conn.close()
    assert_commands_show(home, 1)
    listed = swarm_inproc(home, "ticket", "list").stdout
    assert "stamped" in listed


def test_an_offset_timestamp_is_read_as_the_instant_it_names(home: Path) -> None:
    db = home / "tickets.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "INSERT INTO tickets (title, status, agent_id, updated_at) VALUES"
        " ('a', 'draft', 'echo', '2026-11-30T23:00:00+01:00'),"
        " ('b', 'draft', 'echo', '2026-11-30 22:00:00'), ('c', 'draft', 'echo', 1796076000)"
    )
    conn.close()
    rows = swarm_inproc(home, "ticket", "list", "--json")
    assert rows.returncode == 0
    stamps = {t["title"]: t["updated_at"] for t in json.loads(rows.stdout)}
    assert stamps == {
        "a": "2026-11-30T22:00:00.000Z",
        "b": "2026-11-30T22:00:00.000Z",
        "c": "2026-11-30T22:00:00.000Z",
    }


# Forms SQLite's julianday() reads that the engine once refused as "not a timestamp"
SQLITE_STAMPS = [
    "2026-12-02T10:00:00z", "now", "2026-12-02T24:00:00Z", "10:00", "2026-12-02T10:00",
    "10:00:00.123", "2026-12-02T10:00:00.123456789Z", "2026-12-02T10:00:00.5+01:00",
    "2026-02-30", 2461011.5,
]  # fmt: skip


@pytest.mark.parametrize("stamp", SQLITE_STAMPS, ids=[str(s) for s in SQLITE_STAMPS])
def test_every_form_sqlite_reads_runs_and_shows(home: Path, stamp: object) -> None:
    db = home / "tickets.db"
    done = raw_insert(db, {"title": "old", "status": "done", "agent_id": "echo",
                           "updated_at": stamp})  # fmt: skip
    fresh = raw_insert(db, {"title": "new", "status": "open", "agent_id": "echo",
                            "created_at": stamp})  # fmt: skip
    ran = swarm(home, "start", "--foreground", "--until-idle", timeout=60, **FAST)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert status_of(home, fresh) == "done", query(db, "SELECT error FROM tickets")
    for tid in (done, fresh):
        assert_commands_show(home, tid)
    listed = swarm_inproc(home, "ticket", "list")
    assert "malformed" not in listed.stdout and "?" not in listed.stdout, listed.stdout
    shown = swarm_inproc(home, "ticket", "show", str(done))
    assert "malformed" not in shown.stdout and "not a timestamp" not in shown.stdout
    (row,) = query(db, "SELECT julianday(updated_at, 'auto') AS jd FROM tickets WHERE id = ?", done)
    stamps = {t["id"]: t for t in json.loads(swarm_inproc(home, "ticket", "list", "--json").stdout)}
    assert stamps[done]["defects"] == [] and stamps[fresh]["defects"] == []
    if stamp != "now":  # the same instant SQLite reads, to the millisecond
        seen = datetime.fromisoformat(stamps[done]["updated_at"])
        days = (seen - datetime(2000, 1, 1, 12, tzinfo=UTC)) / timedelta(days=1) + 2451545.0
        assert abs(days - row["jd"]) * 86_400_000 < 1


def test_a_cron_workflow_registered_in_a_form_sqlite_reads_fires(
    home: Path, engines: list[subprocess.Popen[str]]
) -> None:
    registry_row(
        home,
        "workflows",
        {"name": "cronz", "version": "1.0.0", "steps": [{"id": "s", "agent": "echo"}],
         "triggers": [{"name": "tick", "cron": "* * * * * *", "sub_minute": True}]},
        created_at="2026-01-02T10:00:00.123456z",
    )  # fmt: skip
    proc = start_engine(home, **FAST)
    engines.append(proc)
    engine_ready(home, proc)
    db = home / "tickets.db"

    def firings() -> int:
        assert proc.poll() is None, "the engine stopped"
        return int(query(db, "SELECT count(*) AS n FROM trigger_firings")[0]["n"])

    wait_until(lambda: firings() >= 2, 30, "the cron trigger to fire twice")
    stop(proc)


def test_an_unknown_status_is_left_alone_and_shown(home: Path) -> None:
    db = home / "tickets.db"
    raw_insert(db, {"title": "weird", "status": "paused", "agent_id": "echo"}, past_checks=True)
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=60, **FAST)
    assert done.returncode == 0 and "running 0 ticket" in done.stdout
    assert status_of(home, 1) == "paused"
    status = swarm_inproc(home, "status")
    assert status.returncode == 0 and "'paused' 1" in status.stdout
    assert_commands_show(home, 1)


def test_markup_in_stored_text_is_printed_literally(home: Path) -> None:
    raw_insert(home / "tickets.db", {"title": "[/bold] [red]x", "status": "draft", "agent_id": "e"})
    shown = swarm_inproc(home, "ticket", "show", "1")
    assert shown.returncode == 0, shown.stderr
    assert "[/bold] [red]x" in shown.stdout
    assert "[/bold] [red]x" in swarm_inproc(home, "ticket", "list").stdout


# -- registry rows written by hand ------------------------------------------------------
BACKWARD_3000: list[dict[str, object]] = [
    {"id": f"s{i}", "agent": "echo", "needs": [f"s{i + 1}"] if i < 2999 else []}
    for i in range(3000)
]  # s_i needs s_{i+1}: a recursive walk of it goes 3,000 calls deep
HALF_SPECS = [
    (
        "workflows",
        '(\'half-wf\', \'1.0.0\', \'{"steps":[{"id":"a","agent":"echo"}]}\')',
        "workflow",
        "half-wf",
        "workflow half-wf@1.0.0 in the registry: spec.name: Field required",
    ),
    (
        "workflows",
        '(\'ghost-wf\', \'1.0.0\', \'{"name":"ghost-wf","version":"1.0.0",'
        '"steps":[{"id":"a","agent":"nobody"}]}\')',
        "workflow",
        "ghost-wf",
        "unknown agent 'nobody'",
    ),
    (
        "agents",
        "('half-agent', '1.0.0', 'shell', '{\"kind\":\"shell\"}')",
        "single",
        "half-agent",
        "agent half-agent@1.0.0 in the registry: spec.name: Field required",
    ),
    (
        "agents",
        '(\'mixed\', \'1.0.0\', \'echo\', \'{"name":"mixed","version":"1.0.0","kind":"shell"}\')',
        "single",
        "mixed",
        "kind column 'echo' but spec.kind 'shell'",
    ),
    (
        "agents",
        "('list-spec', '1.0.0', 'echo', '[1, 2]')",
        "single",
        "list-spec",
        "agent list-spec@1.0.0 in the registry: spec: Input should be an object",
    ),
    (
        "agents",
        '(\'env-eq\', \'1.0.0\', \'shell\', \'{"name":"env-eq","version":"1.0.0",'
        '"kind":"shell","command":"true","env":{"A=B":"x"}}\')',
        "single",
        "env-eq",
        "agent env-eq@1.0.0 in the registry: spec.env: 'A=B' is not an environment variable",
    ),
    (  # registration refuses it; a row holding it fails its ticket alone, before any VM
        "agents",
        '(\'dot-out\', \'1.0.0\', \'shell\', \'{"name":"dot-out","version":"1.0.0",'
        '"kind":"shell","command":"true","output_files":["out.txt","."]}\')',
        "single",
        "dot-out",
        "agent dot-out@1.0.0 in the registry: spec.output_files.1: path '.' names the VM"
        " workspace itself, not a file",
    ),
    (  # registration refuses it; a row holding it failed only when `sh` ran it
        "agents",
        '(\'unclosed\', \'1.0.0\', \'shell\', \'{"name":"unclosed","version":"1.0.0",'
        '"kind":"shell","command":"echo ${inputs.x"}\')',
        "single",
        "unclosed",
        "agent unclosed@1.0.0 in the registry: command: malformed reference '${inputs.x'",
    ),
    (  # the sqlite3 shell's readfile() stores a BLOB: said so, with how to store text
        "agents",
        "('blob-spec', '1.0.0', 'echo', CAST('{\"name\":\"blob-spec\"}' AS BLOB))",
        "single",
        "blob-spec",
        "agent blob-spec@1.0.0 in the registry: spec is binary (a BLOB of 20 bytes), not text:"
        " write CAST(x AS TEXT)",
    ),
    (  # a kind stored as a BLOB: said as the spec's is (it read `kind column b'shell'`)
        "agents",
        "('blob-kind', '1.0.0', CAST('shell' AS BLOB),"
        ' \'{"name":"blob-kind","version":"1.0.0","kind":"shell","command":"true"}\')',
        "single",
        "blob-kind",
        "agent blob-kind@1.0.0 in the registry: kind is binary (a BLOB of 5 bytes), not text:"
        " write CAST(x AS TEXT)",
    ),
    (
        "workflows",
        "('rchain', '1.0.0', '"
        + json.dumps({"name": "rchain", "version": "1.0.0", "steps": BACKWARD_3000})
        + "')",
        "workflow",
        "rchain",
        "workflow rchain@1.0.0 in the registry: spec.steps: List should have at most 1000 items",
    ),
]


def add_registry_row(home: Path, table: str, values: str) -> None:
    columns = "(name, version, spec)" if table == "workflows" else "(name, version, kind, spec)"
    conn = sqlite3.connect(home / "registry.db", isolation_level=None)
    conn.execute(f"INSERT INTO {table} {columns} VALUES {values}")
    conn.close()


def ticket_for(home: Path, mode: str, name: str) -> int:
    column = "workflow_id" if mode == "workflow" else "agent_id"
    return raw_insert(
        home / "tickets.db", {"title": name, "status": "open", "execution_mode": mode, column: name}
    )


@pytest.mark.parametrize(
    ("table", "values", "mode", "name", "message"), HALF_SPECS, ids=[h[3] for h in HALF_SPECS]
)
def test_a_hand_written_registry_row_is_one_clear_line(
    home: Path, table: str, values: str, mode: str, name: str, message: str
) -> None:
    add_registry_row(home, table, values)
    tid = ticket_for(home, mode, name)
    done = swarm(home, "run-ticket", str(tid), "--wait")
    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert message in done.stderr
    assert status_of(home, tid) == "open"  # refused before the claim: nothing changed


def test_a_hand_written_command_registration_refuses_fails_a_workflow_at_plan_time(
    home: Path,
) -> None:
    """An agent row whose command registration refuses (`echo ${inputs.x`: `sh` said
    "Missing '}'" once the step ran), used by a workflow's step: the ticket is refused at
    plan time with one line naming the agent and the field; no run, no step."""
    unclosed = next(h for h in HALF_SPECS if h[3] == "unclosed")
    add_registry_row(home, "agents", unclosed[1])
    add_registry_row(
        home,
        "workflows",
        '(\'unclosed-wf\', \'1.0.0\', \'{"name":"unclosed-wf","version":"1.0.0",'
        '"steps":[{"id":"a","agent":"echo"},{"id":"b","agent":"unclosed","needs":["a"]}]}\')',
    )
    tid = ticket_for(home, "workflow", "unclosed-wf")
    done = swarm(home, "run-ticket", str(tid), "--wait")
    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stderr.startswith(f"error: {unclosed[4]} ") and done.stderr.count("\n") == 1
    assert not query(home / "tickets.db", "SELECT id FROM workflow_runs")


def test_under_the_engine_bad_definitions_fail_their_tickets_at_once(
    home: Path, engines: list[subprocess.Popen[str]]
) -> None:
    for table, values, _, _, _ in HALF_SPECS:
        add_registry_row(home, table, values)
    proc = start_engine(home, "--max-vms", "2", **FAST)
    engines.append(proc)
    engine_ready(home, proc)
    ids = {ticket_for(home, mode, name): message for _, _, mode, name, message in HALF_SPECS}
    good = raw_insert(home / "tickets.db", {"title": "good", "status": "open", "agent_id": "echo"})
    wait_until(
        lambda: (
            all(status_of(home, t) == "failed" for t in ids) and status_of(home, good) == "done"
        ),
        30,
        "the bad tickets to fail and the good one to run",
    )
    for tid, message in ids.items():
        (row,) = query(home / "tickets.db", "SELECT error, attempts FROM tickets WHERE id = ?", tid)
        assert message in row["error"] and row["attempts"] == 1
    assert proc.poll() is None
    out = stop(proc)
    assert proc.returncode == 0 and "Traceback" not in out, out


HUGE_VERSION = "9" * 5000  # more digits than Python converts to an int
SCHEMAS = {
    "schema-type": ({"type": 5}, "inputs.type: not a valid JSON Schema"),
    "schema-re": (
        {"type": "object", "properties": {"a": {"type": "string", "pattern": "(("}}},
        "inputs.properties.a.pattern: not a valid JSON Schema: '((' is not a 'regex'",
    ),
}


def registry_row(home: Path, table: str, spec: dict[str, object], **columns: str) -> None:
    """A registry row as any SQLite client writes it, its name and version the spec's."""
    row = {"name": spec["name"], "version": spec["version"], "spec": json.dumps(spec), **columns}
    if table == "agents":
        row.setdefault("kind", str(spec.get("kind", "shell")))
    conn = sqlite3.connect(home / "registry.db", isolation_level=None)
    conn.execute(
        f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
        tuple(row.values()),
    )
    conn.close()


def test_rows_that_once_stopped_the_engine_affect_their_tickets_alone(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    steps = [{"id": "s", "agent": "echo"}]
    for version in ("1.0.0", HUGE_VERSION):
        registry_row(home, "workflows", {"name": "vk", "version": version, "steps": steps})
        registry_row(home, "agents", {"name": "vka", "version": version, "kind": "echo"})
    every_second = [{"name": "tick", "cron": "* * * * * *", "sub_minute": True}]
    registry_row(
        home,
        "workflows",
        {"name": "cronbad", "version": "1.0.0", "steps": steps,
         "triggers": [{"name": "every-min", "cron": "* * * * *"}]},
        created_at="10000000000000000000000",
    )  # fmt: skip
    registry_row(
        home, "workflows", {"name": "cronok", "version": "1.0.0", "steps": steps,
                            "triggers": every_second},
    )  # fmt: skip
    registry_row(home, "workflows", {"name": "rchain", "version": "1.0.0", "steps": BACKWARD_3000})
    for name, (schema, _) in SCHEMAS.items():
        registry_row(
            home,
            "agents",
            {"name": name, "version": "1.0.0", "kind": "shell", "command": "true",
             "inputs": schema},
        )  # fmt: skip
    proc = start_engine(home, "--max-vms", "2", **FAST)
    engines.append(proc)
    engine_ready(home, proc)
    db = home / "tickets.db"
    good = raw_insert(db, {"title": "vka", "status": "open", "agent_id": "vka"})
    failing = {
        raw_insert(db, {"title": n, "status": "open", "agent_id": n, "inputs": '{"a": "x"}'}): m
        for n, (_, m) in SCHEMAS.items()
    }
    for variables, kind in (("5", "a number"), ("[1, 2]", "an array")):
        tid = raw_insert(
            db,
            {"title": "v", "status": "open", "execution_mode": "workflow", "workflow_id": "vk",
             "inputs": f'{{"variables": {variables}}}'},
        )  # fmt: skip
        failing[tid] = f"ticket {tid}: inputs.variables must be a JSON object, not {kind}"
    chained = ticket_for(home, "workflow", "rchain")
    failing[chained] = "spec.steps: List should have at most 1000 items"

    def firings() -> int:
        assert proc.poll() is None, "the engine stopped"
        return int(query(db, "SELECT count(*) AS n FROM trigger_firings")[0]["n"])

    # past the registry's second re-read (every 10 s): the good trigger fires all along
    wait_until(lambda: firings() >= 12, 60, "the good cron trigger to fire for 12 seconds")
    wait_until(lambda: all(status_of(home, t) == "failed" for t in failing), 30, "the failures")
    assert status_of(home, good) == "done"
    for tid, message in failing.items():
        (row,) = query(db, "SELECT error FROM tickets WHERE id = ?", tid)
        assert message in row["error"] and "\n" not in row["error"], row
    assert proc.poll() is None, "the engine stopped"
    for args, code, shown in (
        (("workflow", "show", "vk"), 0, "version: 1.0.0"),
        (("workflow", "runs", "vk"), 0, "inputs.variables must be a JSON object"),
        (("workflow", "list"), 0, "rchain"),
        (("agent", "show", "vka"), 0, "version: 1.0.0"),
        (("agent", "list"), 0, "vka"),
        (("ticket", "create", "--agent", "vka", "--title", "t", "--draft"), 0, "created"),
        (("workflow", "show", "rchain"), 5, "at most 1000 items"),
        (("ticket", "create", "--workflow", "rchain", "--title", "t"), 5, "at most 1000 items"),
        (
            ("agent", "show", f"vka@{HUGE_VERSION}"),
            5,
            "version is 5,000 bytes of text, more than the 1 KiB",
        ),
    ):
        done = swarm_inproc(home, *args)
        text = done.stdout + done.stderr
        assert done.returncode == code and shown in text and "Traceback" not in text, (args, text)
        if code:
            assert done.stderr.count("\n") == 1 and len(done.stderr) < 300, done.stderr
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "workflow.yaml").write_text("name: other\nsteps:\n  - {id: a, agent: echo}\n")
    done = swarm_inproc(home, "workflow", "register", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    out = stop(proc)
    assert proc.returncode == 0 and "Traceback" not in out, out
    warned = [line for line in out.splitlines() if "cronbad" in line]
    assert len(warned) == 1 and "created_at" in warned[0], out
