"""A key given twice in one JSON object of a stored row is read differently by the engine
(Python keeps the last) and by SQL (SQLite's `json_extract` the first): such a ticket
`inputs` or registry `spec` is a defect of that row, which fails alone with one line,
while every list and show still works."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.support.cli import query, swarm, swarm_inproc

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}


def run_all(home: Path) -> None:
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=60, **FAST)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def insert_ticket(db: Path, inputs: str, **columns: str) -> int:
    row = {"title": "dup", "status": "open", "agent_id": "echo", "inputs": inputs, **columns}
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        names, marks = ", ".join(row), ", ".join("?" * len(row))
        cur = conn.execute(f"INSERT INTO tickets ({names}) VALUES ({marks})", tuple(row.values()))
        assert cur.lastrowid is not None
        return cur.lastrowid
    finally:
        conn.close()


def registry_write(home: Path, sql: str, *args: object) -> None:
    conn = sqlite3.connect(home / "registry.db", timeout=30, isolation_level=None)
    try:
        conn.execute(sql, args)
    finally:
        conn.close()


def assert_views_work(home: Path, ticket_id: int) -> None:
    for args in (
        ("ticket", "list"),
        ("ticket", "list", "--json"),
        ("ticket", "show", str(ticket_id)),
        ("ticket", "show", str(ticket_id), "--json"),
        ("agent", "list"),
        ("agent", "list", "--json"),
        ("workflow", "list"),
        ("workflow", "list", "--json"),
    ):
        done = swarm_inproc(home, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stdout + done.stderr, args


def test_ticket_inputs_holding_a_key_twice_fail_that_ticket(home: Path) -> None:
    db = home / "tickets.db"
    top = insert_ticket(db, '{"a": "first", "a": "second"}')
    deep = insert_ticket(db, '{"x": [{"b": 1, "c": {"d": 1, "d": 2}}]}')
    good = insert_ticket(db, '{"a": "first", "x": {"a": 2}}')  # same key, other objects
    assert query(db, f"SELECT json_extract(inputs, '$.a') AS a FROM tickets WHERE id = {top}") == [
        {"a": "first"}
    ]
    run_all(home)
    rows = {r["id"]: r for r in query(db, "SELECT id, status, error FROM tickets")}
    assert rows[good]["status"] == "done", rows[good]
    assert rows[top]["status"] == "failed"
    assert rows[top]["error"] == f'ticket {top} row is malformed: inputs: duplicate key "a"'
    assert rows[deep]["status"] == "failed"
    assert rows[deep]["error"] == f'ticket {deep} row is malformed: inputs: duplicate key "d"'
    assert not query(db, "SELECT 1 FROM step_executions s JOIN workflow_runs r"
                         f" ON s.run_id = r.id WHERE r.ticket_id IN ({top}, {deep})")  # fmt: skip
    assert_views_work(home, top)
    shown = swarm_inproc(home, "ticket", "show", str(top))
    assert 'inputs: duplicate key "a"' in shown.stdout, shown.stdout


def test_a_workflow_spec_holding_steps_twice_is_refused(home: Path) -> None:
    """The tester's case: SQL shows a harmless first `steps`, Python ran the second."""
    swarm(home, "ticket", "list", check=True)
    harmless = '[{"id": "ok", "agent": "echo"}]'
    evil = '[{"id": "evil", "agent": "shell", "inputs": {"command": "echo EVIL"}}]'
    spec = f'{{"name": "twice", "version": "1.0.0", "steps": {harmless}, "steps": {evil}}}'
    registry_write(home, "INSERT INTO workflows (name, version, spec) VALUES (?, ?, ?)",
                   "twice", "1.0.0", spec)  # fmt: skip
    line = 'workflow twice@1.0.0 in the registry: spec: duplicate key "steps"'
    created = swarm_inproc(home, "ticket", "create", "--title", "t", "--workflow", "twice")
    assert created.returncode == 5, created.stdout + created.stderr
    assert created.stderr.strip() == f"error: {line}", created.stderr
    ticket_id = insert_ticket(home / "tickets.db", "{}", agent_id="", execution_mode="workflow",
                              workflow_id="twice")  # fmt: skip
    run_all(home)
    rows = query(home / "tickets.db", f"SELECT status, error FROM tickets WHERE id = {ticket_id}")
    assert rows[0]["status"] == "failed" and rows[0]["error"].endswith(line), rows
    assert not query(home / "tickets.db", "SELECT 1 FROM step_executions WHERE step_id = 'evil'")
    assert_views_work(home, ticket_id)
    listed = json.loads(swarm_inproc(home, "workflow", "list", "--json").stdout)
    assert listed == [{"name": "twice", "version": "1.0.0", "description": "", "spec": None,
                       "created_at": listed[0]["created_at"],
                       "defects": ['spec: duplicate key "steps"'],
                       "cannot_run": "unreadable spec (defects: --json)"}]  # fmt: skip


def test_an_agent_spec_holding_a_key_twice_deep_down_is_refused(home: Path) -> None:
    spec = ('{"name": "twin", "version": "1.0.0", "kind": "shell", "command": "echo hi",'
            ' "env": {"A": "1", "A": "2"}}')  # fmt: skip
    registry_write(home, "INSERT INTO agents (name, version, kind, spec) VALUES (?, ?, ?, ?)",
                   "twin", "1.0.0", "shell", spec)  # fmt: skip
    line = 'agent twin@1.0.0 in the registry: spec: duplicate key "A"'
    created = swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "twin")
    assert created.returncode == 5 and created.stderr.strip() == f"error: {line}", created.stderr
    shown = swarm_inproc(home, "agent", "show", "twin")
    assert shown.returncode == 5 and line in shown.stderr, shown.stdout + shown.stderr
    ticket_id = insert_ticket(home / "tickets.db", "{}", agent_id="twin")
    run_all(home)
    rows = query(home / "tickets.db", f"SELECT status, error FROM tickets WHERE id = {ticket_id}")
    assert rows[0]["status"] == "failed" and rows[0]["error"].endswith(line), rows
    assert_views_work(home, ticket_id)
