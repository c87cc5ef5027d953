"""Property: whatever rows another SQLite client writes into `tickets`, `agents` and
`workflows` while an engine runs, the engine never dies, every ticket it can take ends in
a final state (the others stay untouched), and no command prints a traceback."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.acceptance.conftest import engine_ready, stop
from tests.support.cli import query, start_engine, swarm_inproc, wait_until

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}
STATUSES = ["draft", "open", "claimed", "running", "done", "failed", "cancelled"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
anything = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=40),
    json_values.map(json.dumps),
)
TICKET_COLUMNS: dict[str, st.SearchStrategy[Any]] = {
    "title": st.text(max_size=30) | anything,
    "description": st.text(max_size=60) | anything,
    "status": st.sampled_from(["open", "open", "draft", *STATUSES]) | anything,
    "execution_mode": st.sampled_from(["single", "workflow"]) | anything,
    "agent_id": st.sampled_from(["echo", "ghost", "echo@1.0.0"]) | anything,
    "workflow_id": st.sampled_from(["text-report", "nope"]) | anything,
    "inputs": json_values.map(json.dumps) | anything,
    "priority": st.integers(-5, 5) | anything,
    "attempts": st.integers(0, 5) | anything,
    "max_attempts": st.integers(0, 5) | anything,
    "timeout_seconds": st.floats(0.01, 100) | anything,
    "result": anything,
    "error": anything,
    "engine_id": anything,
    "attempt_id": anything,
    "lease_expires_at": anything,
    "cancel_requested": anything,
    "created_at": anything,
    "updated_at": anything,
    "claimed_at": anything,
    "started_at": anything,
    "completed_at": anything,
}
ticket_rows = st.fixed_dictionaries(
    {},
    optional={name: strategy for name, strategy in TICKET_COLUMNS.items()},
)
registry_rows = st.tuples(
    st.sampled_from(["agents", "workflows"]),
    st.sampled_from(["echo", "ghost", "text-report"]) | st.text(max_size=10),
    st.sampled_from(["1.0.0", "9.9.9", "2"]) | st.text(max_size=6),
    st.sampled_from(["echo", "shell", "claude", "weird"]),
    json_values.map(json.dumps)
    | st.builds(
        lambda name, kind, extra: json.dumps(
            {"name": name, "version": "9.9.9", "kind": kind, **extra}
        ),
        st.sampled_from(["echo", "ghost"]),
        st.sampled_from(["echo", "weird"]),
        st.dictionaries(
            st.sampled_from(["command", "steps", "timeout_seconds", "vm"]), json_values, max_size=2
        ),
    ),
)


def insert(db: Path, sql: str, values: tuple[Any, ...], past_checks: bool) -> None:
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        if past_checks:
            conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute(sql, values)
    except sqlite3.Error:
        pass  # NOT NULL, UNIQUE and the like refuse the row: nothing was written
    finally:
        conn.close()


@pytest.fixture(scope="module")
def engine(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    home = tmp_path_factory.mktemp("random") / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    proc = start_engine(home, "--max-vms", "3", **FAST)
    engine_ready(home, proc)
    yield home, proc
    out = stop(proc)
    assert proc.returncode == 0 and "Traceback" not in out, out


def settled(db: Path) -> bool:
    """Nothing left for an engine to do: no open ticket, no live one whose lease expired."""
    rows = query(
        db,
        "SELECT count(*) AS n FROM tickets WHERE status = 'open' OR (status IN ('claimed','running')"
        " AND (engine_id IN (SELECT id FROM engines WHERE state = 'running')"
        "      OR typeof(lease_expires_at) != 'text'"
        "      OR lease_expires_at < strftime('%Y-%m-%dT%H:%M:%fZ','now')))",
    )
    return rows[0]["n"] == 0


@pytest.mark.timeout(400)
@settings(
    max_examples=int(os.environ.get("SWARM_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    tickets=st.lists(st.tuples(ticket_rows, st.booleans()), min_size=1, max_size=4),
    definitions=st.lists(st.tuples(registry_rows, st.booleans()), max_size=2),
)
def test_random_rows_never_break_the_engine_or_a_command(
    engine: tuple[Path, subprocess.Popen[str]],
    tickets: list[tuple[dict[str, Any], bool]],
    definitions: list[tuple[tuple[str, str, str, str, str], bool]],
) -> None:
    home, proc = engine
    db = home / "tickets.db"
    (before,) = query(db, "SELECT coalesce(max(id), 0) AS id FROM tickets")
    for (table, name, version, kind, spec), past_checks in definitions:
        if table == "agents":
            sql = "INSERT INTO agents (name, version, kind, spec) VALUES (?, ?, ?, ?)"
            insert(home / "registry.db", sql, (name, version, kind, spec), past_checks)
        else:
            sql = "INSERT INTO workflows (name, version, spec) VALUES (?, ?, ?)"
            insert(home / "registry.db", sql, (name, version, spec), past_checks)
    for row, past_checks in tickets:
        columns = ", ".join(row) or "title"
        marks = ", ".join("?" * len(row)) or "''"
        insert(
            db,
            f"INSERT INTO tickets ({columns}) VALUES ({marks})",
            tuple(row.values()),
            past_checks,
        )
    wait_until(lambda: settled(db), 60, "the engine to settle every ticket it can take")
    assert proc.poll() is None, "the engine died"
    new = query(db, "SELECT id FROM tickets WHERE id > ? ORDER BY id", before["id"])
    commands = [("ticket", "list"), ("status",), ("status", "--json"), ("agent", "list")]
    for r in new:
        commands += [("ticket", "show", str(r["id"])), ("logs", str(r["id"]))]
    for args in commands:
        done = swarm_inproc(home, *args)
        text = done.stdout + done.stderr
        assert "Traceback" not in text, (args, text)
        assert done.returncode in (0, 3), (args, text)  # 3: `logs` of a ticket with no run
        if done.returncode:
            assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, text
