"""However a workflow run ends short of `done` while its engine records it (a step
failed, the ticket timed out, was cancelled, or the engine was stopped), its rows say the
same things about its steps: one row per step; a step that was running is `cancelled`
with the error `cancelled`; a step that never started is `skipped` with `not run: WHY`
(tester h-197: a cancelled run had no row for the steps that never started, while a
failed run recorded them skipped; tester h-198: stopped steps' errors were `cancelled` or
NULL)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.acceptance.conftest import write_agent, write_workflow
from tests.support.cli import end_engine, query, start_engine, swarm, wait_until

CHAIN = """name: chain
version: "1"
steps:
  - id: first
    agent: nap
  - id: second
    agent: nap
    needs: [first]
  - id: third
    agent: nap
    needs: [second]
  - id: beside
    agent: nap
"""
"""Two steps that run at once (`first`, `beside`), two that wait for `first`."""


def ticket_with_a_chain(home: Path, tmp_path: Path, *options: str) -> None:
    nap = write_agent(tmp_path / "nap", "name: nap\nkind: shell\ncommand: sleep 300\n")
    assert swarm(home, "agent", "register", str(nap)).returncode == 0
    made = swarm(home, "workflow", "register", str(write_workflow(tmp_path / "wf", CHAIN)))
    assert made.returncode == 0, made.stderr
    made = swarm(home, "ticket", "create", "--title", "t", "--workflow", "chain", *options)
    assert made.returncode == 0, made.stderr


def both_running(db: Path) -> bool:
    rows = query(db, "SELECT 1 FROM step_executions WHERE status = 'running'")
    return len(rows) == 2


def steps_of_the_ended_run(db: Path) -> dict[str, tuple[str, str | None]]:
    [run] = wait_until(
        lambda: query(db, "SELECT id FROM workflow_runs WHERE status <> 'running'"),
        60,
        "the run's end to be recorded",
    )
    rows = query(
        db, "SELECT step_id, status, error FROM step_executions WHERE run_id = ?", run["id"]
    )
    steps = {r["step_id"]: (r["status"], r["error"]) for r in rows}
    assert len(rows) == len(steps) == 4, rows  # one row per step, none twice
    return steps


def assert_ended(steps: dict[str, tuple[str, str | None]], why: str) -> None:
    assert steps["first"] == steps["beside"] == ("cancelled", "cancelled"), steps
    assert steps["second"] == steps["third"] == ("skipped", f"not run: {why}"), steps


def test_a_cancelled_run_records_the_steps_it_never_started(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    ticket_with_a_chain(home, tmp_path)
    engines.append(start_engine(home, "--max-vms", "2"))
    wait_until(lambda: both_running(db), 60, "two steps to run")
    assert swarm(home, "ticket", "cancel", "1").returncode == 0
    assert_ended(steps_of_the_ended_run(db), "the ticket was cancelled")


def test_a_timed_out_run_records_the_steps_it_never_started(home: Path, tmp_path: Path) -> None:
    ticket_with_a_chain(home, tmp_path, "--timeout", "3")
    done = swarm(home, "run-ticket", "1", "--wait", timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "timed out after 3s" in done.stdout + done.stderr
    assert_ended(steps_of_the_ended_run(home / "tickets.db"), "ticket timed out after 3s")


def test_a_run_the_engine_stops_records_the_steps_it_never_started(
    home: Path, tmp_path: Path
) -> None:
    db = home / "tickets.db"
    ticket_with_a_chain(home, tmp_path)
    engine = start_engine(home, "--max-vms", "2")
    try:
        wait_until(lambda: both_running(db), 60, "two steps to run")
    finally:
        end_engine(engine)  # SIGTERM twice: the second aborts the runs
    [run] = query(db, "SELECT error FROM workflow_runs")
    assert run["error"] == "aborted: the engine was stopped during the run"
    assert_ended(steps_of_the_ended_run(db), run["error"])
