"""A workflow step's numbers are capped as an agent's are (`models.STEP_TIMEOUT_MAX`): a
registry row written past `workflow register` with a step `timeout_seconds` of 1e20 or
1e308 (or a huge `retry.max_backoff_seconds`, or a workflow `timeout_seconds` past a year)
fails its ticket at plan time with one line naming the field, before any VM; it no longer
registers and then fails every run as "command exited with 1: prlimit: failed to parse CPU
limit". Both stores hold the registry (SQLite: registry.db; PostgreSQL: the database)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.acceptance.test_empty_version import registry_sql
from tests.conftest import Target
from tests.support.cli import swarm_inproc

ROWS = {
    "huge": ({"timeout_seconds": 1e20}, "steps.0.timeout_seconds", 604800),
    "max": ({"timeout_seconds": 1e308}, "steps.0.timeout_seconds", 604800),
    "wait": ({"retry": {"attempts": 2, "max_backoff_seconds": 1e300}},
             "steps.0.retry.max_backoff_seconds", 604800),
    "year": ({}, "timeout_seconds", 31536000),
}  # fmt: skip


@pytest.mark.parametrize("name", list(ROWS))
def test_a_row_past_a_cap_fails_its_ticket_with_one_line(
    store_target: Target, tmp_path: Path, name: str
) -> None:
    home = tmp_path / "home"
    env = store_target.env
    assert swarm_inproc(home, "status", "--init", **env).returncode == 0
    step_fields, field, cap = ROWS[name]
    step = {"id": "a", "agent": "shell", "inputs": {"command": "echo hi"}, **step_fields}
    spec = {"name": name, "version": "1.0.0", "steps": [step]}
    if name == "year":
        spec["timeout_seconds"] = 1e20
    text = json.dumps(spec).replace("'", "''")
    registry_sql(
        home,
        store_target,
        f"INSERT INTO workflows (name, version, spec) VALUES ('{name}', '1.0.0', '{text}')",
    )
    store_target.sql(
        "INSERT INTO tickets (title, status, execution_mode, workflow_id, inputs)"
        f" VALUES ('t', 'open', 'workflow', '{name}', '{{}}')"
    )
    done = swarm_inproc(home, "start", "--foreground", "--until-idle", **env)
    assert done.returncode == 0, done.stdout + done.stderr
    (ticket,) = store_target.rows("SELECT status, error FROM tickets")
    assert ticket["status"] == "failed", ticket
    assert ticket["error"].startswith(  # then the value given (as the store kept it)
        f"workflow {name}@1.0.0 in the registry: spec.{field}: Input should be less than or"
        f" equal to {cap}, not 1"
    ), ticket
    assert "\n" not in ticket["error"] and len(ticket["error"]) < 200, ticket
    assert store_target.rows("SELECT count(*) AS n FROM step_executions") == [{"n": 0}]


@pytest.mark.parametrize("timeout", [1e20, 1e308, 31536000.5])
def test_a_ticket_row_past_a_year_fails_with_one_line(
    store_target: Target, tmp_path: Path, timeout: float
) -> None:
    """A ticket row's own `timeout_seconds` past a year (what `ticket create` refuses)
    fails that ticket with one line; the ticket beside it runs."""
    home = tmp_path / "home"
    env = store_target.env
    assert swarm_inproc(home, "status", "--init", **env).returncode == 0
    store_target.sql(
        "INSERT INTO tickets (title, status, execution_mode, agent_id, inputs, timeout_seconds)"
        f" VALUES ('long', 'open', 'single', 'echo', '{{}}', {timeout!r}),"
        " ('fine', 'open', 'single', 'echo', '{}', 60)"
    )
    done = swarm_inproc(home, "start", "--foreground", "--until-idle", **env)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = store_target.rows("SELECT title, status, error FROM tickets ORDER BY id")
    assert [(r["title"], r["status"]) for r in rows] == [("long", "failed"), ("fine", "done")]
    error = rows[0]["error"]
    assert "timeout_seconds: must be positive, at most 31536000" in error, error
    assert f"(a year; is {timeout!r})" in error, error  # the value itself, not 3.1536e+07
    assert "\n" not in error
