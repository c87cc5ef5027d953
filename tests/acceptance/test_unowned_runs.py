"""A `running` run that names no engine (`engine_id` NULL: another writer made it) has
no engine to close it: the reaper (`cleanup`, a daemon's start and rounds, `run-ticket`
before its claim) closes it failed with one line, unless its ticket is held under its
attempt. A run of an engine, even one whose ticket is not held, is never touched by
this rule. The same on both stores."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import Target
from tests.support.cli import swarm, swarm_inproc

from swarm_engine.store.engines import UNOWNED_RUN

IN_TEN_MINUTES = {
    "sqlite": "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+600 seconds')",
    "postgresql": "now() + interval '600 seconds'",
}


@pytest.fixture
def home(store_target: Target, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", **store_target.env).returncode == 0
    for title in ("a", "b", "c", "d"):
        done = swarm_inproc(home, "ticket", "create", "--title", title, "--agent", "echo",
                            "--input", "msg=hi", **store_target.env)  # fmt: skip
        assert done.returncode == 0, done.stderr
    return home


def fake_run(target: Target, ticket: int, attempt: str, engine: str | None) -> int:
    """A `running` run of `ticket` under `attempt`, with a `running` step, as any writer
    may make one; its id."""
    engine_sql = "NULL" if engine is None else f"'{engine}'"
    target.sql(
        "INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, engine_id, execution_mode,"
        f" status) VALUES ({ticket}, 1, '{attempt}', {engine_sql}, 'single', 'running')"
    )
    (run,) = target.rows("SELECT id FROM workflow_runs WHERE attempt_id = %(a)s", a=attempt)
    target.sql(
        "INSERT INTO step_executions (run_id, step_id, agent_name, agent_version, agent_kind,"
        f" status) VALUES ({run['id']}, 'main', 'echo', '1.0.0', 'echo', 'running')"
    )
    return int(run["id"])


def run_row(target: Target, run_id: int) -> tuple[str, str | None, str]:
    (run,) = target.rows("SELECT status, error FROM workflow_runs WHERE id = %(r)s", r=run_id)
    (step,) = target.rows("SELECT status FROM step_executions WHERE run_id = %(r)s", r=run_id)
    return str(run["status"]), run["error"], str(step["status"])


def test_cleanup_and_run_ticket_close_only_the_runs_no_engine_holds(
    home: Path, store_target: Target
) -> None:
    t = store_target
    unowned = fake_run(t, 1, "fake-1", None)  # ticket 1 open: its attempt holds nothing
    # ticket 2 held under the run's attempt (its lease in the future): left to its lease
    t.sql(
        "UPDATE tickets SET status = 'running', attempt_id = 'held-2', engine_id = NULL,"
        f" lease_expires_at = {IN_TEN_MINUTES[t.dialect]} WHERE id = 2"
    )
    held = fake_run(t, 2, "held-2", None)
    # an engine's run (an engine of another host that heartbeats): never this rule's
    t.sql(
        "INSERT INTO engines (id, host, pid, max_vms, backend) VALUES"
        " ('live-engine', 'elsewhere', 1, 1, 'process')"
    )
    engines = fake_run(t, 3, "theirs-3", "live-engine")

    done = swarm(home, "cleanup", **t.env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert run_row(t, unowned) == ("failed", UNOWNED_RUN, "failed")
    assert "closed 1 run(s) no engine held" in done.stdout, done.stdout
    assert f"runs [{unowned}] closed failed" in done.stderr
    assert "Traceback" not in done.stderr
    assert run_row(t, held) == ("running", None, "running")
    assert run_row(t, engines) == ("running", None, "running")
    assert UNOWNED_RUN.count("\n") == 0

    # `run-ticket` closes one before its claim too, and runs its ticket once
    later = fake_run(t, 4, "fake-4", None)
    done = swarm(home, "run-ticket", "4", "--wait", **t.env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert run_row(t, later) == ("failed", UNOWNED_RUN, "failed")
    runs = t.rows("SELECT status FROM workflow_runs WHERE ticket_id = 4 ORDER BY id")
    assert [r["status"] for r in runs] == ["failed", "done"]
    assert run_row(t, held) == ("running", None, "running")
    assert run_row(t, engines) == ("running", None, "running")
