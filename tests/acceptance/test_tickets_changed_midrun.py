"""A ticket deleted, or its attempt changed, by another writer while an engine runs it
(a hostile trigger inside the engine's own write included): the engine sees it at the
write that is refused, ends that attempt at once with one logged line (the ticket failed
with the reason if it is still there), never runs it again, and goes on with the others."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.acceptance.conftest import engine_ready, stop, write_agent
from tests.support.cli import query, sqlite_shell, start_engine, swarm, swarm_inproc, wait_until

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5", "SWARM_LEASE_TTL": "6"}
"""A short lease: before the fix, the victim came back only when its lease ran out."""

VICTIM = "(SELECT id FROM tickets WHERE title = 'victim')"


def make_tickets(home: Path, tmp_path: Path, command: str = "echo hi") -> None:
    write_agent(tmp_path / "say", f"name: say\nkind: shell\ncommand: {command}\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "say")).returncode == 0
    for title in ("victim", "bystander"):
        done = swarm_inproc(home, "ticket", "create", "--title", title, "--agent", "say")
        assert done.returncode == 0, done.stderr


def run_with_trigger(home: Path, tmp_path: Path, trigger: str) -> tuple[str, dict[str, Any]]:
    """A victim and a bystander ticket run by `start --until-idle` with `trigger` on the
    store: the engine's output and the victim's row (the bystander is done)."""
    make_tickets(home, tmp_path)
    sqlite_shell(home / "tickets.db", f"CREATE TRIGGER hostile {trigger.format(victim=VICTIM)};")
    done = swarm(home, "start", "--foreground", "--until-idle", "--max-vms", "1",
                 timeout=120, **FAST)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in out, out
    assert not re.search(r"ticket (\d+): ticket \1:", out), out  # each line names it once
    rows = {r["title"]: r for r in query(home / "tickets.db", "SELECT * FROM tickets")}
    assert rows["bystander"]["status"] == "done", rows
    return out, rows["victim"]


@pytest.mark.parametrize(
    ("stage", "trigger"),
    [
        # the brief's trigger: the run's row goes in, the ticket goes out (same transaction)
        ("the run's start",
         "AFTER INSERT ON workflow_runs WHEN NEW.ticket_id = {victim}"
         " BEGIN DELETE FROM tickets WHERE id = NEW.ticket_id; END"),
        ("the run's start",
         "AFTER UPDATE OF status ON tickets WHEN NEW.id = {victim} AND NEW.status = 'running'"
         " BEGIN UPDATE tickets SET attempt_id = 'forged' WHERE id = NEW.id; END"),
        ("a step's start",
         "AFTER UPDATE OF state ON vms WHEN NEW.state = 'busy' AND NEW.step_execution_id IN"
         " (SELECT s.id FROM step_executions s JOIN workflow_runs r ON r.id = s.run_id"
         "   WHERE r.ticket_id = {victim})"
         " BEGIN DELETE FROM tickets WHERE id = {victim}; END"),
        ("the run's end",
         "AFTER UPDATE OF status ON workflow_runs WHEN NEW.ticket_id = {victim}"
         " AND NEW.status = 'done'"
         " BEGIN UPDATE tickets SET attempt_id = 'forged' WHERE id = NEW.ticket_id; END"),
    ],
)  # fmt: skip
def test_a_trigger_that_takes_the_ticket_inside_the_engines_write_fails_it_at_once(
    home: Path, tmp_path: Path, stage: str, trigger: str
) -> None:
    db = home / "tickets.db"
    out, victim = run_with_trigger(home, tmp_path, trigger)
    # failed once, at once, with the stage named; never re-queued, no lease left to expire
    assert victim["status"] == "failed" and victim["attempts"] == 1, victim
    assert victim["error"].startswith(f"{stage} could not be recorded: another writer"), victim
    assert "lease expired" not in out and "\n" not in victim["error"]
    assert [line for line in out.splitlines() if "WARNING" in line] == [
        line for line in out.splitlines() if f"ticket {victim['id']} failed: {stage}" in line
    ], out
    assert len([line for line in out.splitlines() if "WARNING" in line]) == 1, out
    assert not query(db, "SELECT 1 FROM workflow_runs WHERE status = 'running'")
    assert not query(db, "SELECT 1 FROM step_executions WHERE status IN ('queued','running')")
    assert not query(db, "SELECT 1 FROM vms WHERE state NOT IN ('destroyed', 'failed')")


def test_a_ticket_deleted_while_its_step_runs_stops_its_run_and_frees_its_slot(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    make_tickets(home, tmp_path, command="sleep 300")
    proc = start_engine(home, "--max-vms", "1", **FAST)
    engines.append(proc)
    engine_ready(home, proc)
    wait_until(
        lambda: query(db, "SELECT 1 FROM step_executions WHERE status = 'running'"), 30, "a step"
    )
    (running,) = query(db, "SELECT id, title FROM tickets WHERE status = 'running'")
    sqlite_shell(db, f"DELETE FROM tickets WHERE id = {running['id']}")
    # its one slot goes to the other ticket: the deleted one's VM is gone first
    wait_until(
        lambda: query(db, "SELECT 1 FROM tickets WHERE status = 'running'"), 30, "the next ticket"
    )
    gone = query(db, "SELECT count(*) n FROM vms WHERE state IN ('destroyed', 'failed')")
    assert gone[0]["n"] == 1
    assert swarm_inproc(home, "ticket", "cancel", "2").returncode == 0
    out = stop(proc)
    assert proc.returncode == 0 and "Traceback" not in out, out
    lines = [line for line in out.splitlines() if f"ticket {running['id']}" in line]
    assert len(lines) == 1 and "was deleted by another writer during its run" in lines[0], out


def test_an_attempt_taken_inside_its_own_write_leaves_no_run_behind(
    home: Path, tmp_path: Path
) -> None:
    """A trigger that hands the ticket to another attempt (re-opened, `attempt_id` forged)
    inside the engine's insert of the step's row: the engine's write commits, its next one
    is refused and the ticket is not its own any more. Its own run was left `running`,
    which kept the ticket from any new claim: `--until-idle` never ended."""
    db = home / "tickets.db"
    make_tickets(home, tmp_path)
    trigger = (
        "CREATE TRIGGER hostile AFTER INSERT ON step_executions"
        " WHEN (SELECT ticket_id FROM workflow_runs WHERE id = NEW.run_id) = {victim}"
        " AND (SELECT attempts FROM tickets WHERE id = {victim}) = 1"
        " BEGIN UPDATE tickets SET attempt_id = 'forged', status = 'open'"
        " WHERE id = {victim}; END;"
    )
    sqlite_shell(db, trigger.format(victim=VICTIM))
    done = swarm(home, "start", "--foreground", "--until-idle", "--max-vms", "1",
                 timeout=120, **FAST)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in out, out
    assert not query(db, "SELECT 1 FROM workflow_runs WHERE status = 'running'"), out
    rows = {r["title"]: r for r in query(db, "SELECT * FROM tickets")}
    assert rows["bystander"]["status"] == "done", rows
    # the re-opened ticket was claimed again and ran to its end, once more
    assert rows["victim"]["status"] == "done" and rows["victim"]["attempts"] == 2, rows
    runs = query(db, "SELECT status FROM workflow_runs WHERE ticket_id = ? ORDER BY id",
                 rows["victim"]["id"])  # fmt: skip
    assert [r["status"] for r in runs] == ["failed", "done"], runs


@pytest.mark.parametrize(
    ("stage", "trigger"),
    [
        ("the run's start",
         "BEFORE INSERT ON workflow_runs WHEN NEW.ticket_id = {victim}"
         " BEGIN SELECT RAISE(ABORT, 'no runs for you'); END"),
        ("a step's start",
         "BEFORE UPDATE OF status ON step_executions WHEN NEW.status = 'running'"
         " AND NEW.run_id IN (SELECT id FROM workflow_runs WHERE ticket_id = {victim})"
         " BEGIN SELECT RAISE(ABORT, 'no runs for you'); END"),
        ("the run's end",
         "BEFORE UPDATE OF status ON workflow_runs WHEN NEW.ticket_id = {victim}"
         " AND NEW.status = 'done' BEGIN SELECT RAISE(ABORT, 'no runs for you'); END"),
    ],
)  # fmt: skip
def test_a_write_the_store_refuses_fails_the_ticket_with_one_line(
    home: Path, tmp_path: Path, stage: str, trigger: str
) -> None:
    """A trigger that RAISEs on one of the engine's writes (or any constraint): that ticket
    fails at once with one line naming the stage and what the store said; it was an
    'internal error' with a traceback in the engine's log."""
    db = home / "tickets.db"
    _, victim = run_with_trigger(home, tmp_path, trigger)
    assert victim["status"] == "failed" and victim["attempts"] == 1, victim
    assert victim["error"] == (
        f"{stage} could not be recorded: the store refused it (no runs for you)"
    ), victim
    assert not query(db, "SELECT 1 FROM workflow_runs WHERE status = 'running'")
    assert not query(db, "SELECT 1 FROM step_executions WHERE status IN ('queued','running')")
    assert not query(db, "SELECT 1 FROM vms WHERE state NOT IN ('destroyed', 'failed')")


def test_a_run_row_a_trigger_silently_drops_fails_that_ticket_with_one_line(
    home: Path, tmp_path: Path
) -> None:
    """`RAISE(IGNORE)` on the run's insert: the statement "succeeds" and no row is there
    (it was an AssertionError traceback and 'internal error'); the ticket fails with one
    line, the bystander runs."""
    _, victim = run_with_trigger(
        home, tmp_path,
        "BEFORE INSERT ON workflow_runs WHEN NEW.ticket_id = {victim} BEGIN SELECT RAISE(IGNORE); END",
    )  # fmt: skip
    assert victim["status"] == "failed", victim
    assert victim["error"] == (
        "the run's start could not be recorded: the store refused it"
        f" (ticket {victim['id']}: the store did not keep the run's row (a trigger?))"
    ), victim


def test_a_trigger_error_that_says_locked_is_no_busy_store(home: Path, tmp_path: Path) -> None:
    """An error whose text holds "locked" (a trigger's JSON path error) was taken for a
    busy store and retried until every lease ran out; it is the store refusing that
    ticket's write: that ticket fails, the bystander runs."""
    _, victim = run_with_trigger(
        home, tmp_path,
        "BEFORE INSERT ON workflow_runs WHEN NEW.ticket_id = {victim}"
        " BEGIN SELECT json_extract('{{}}', 'locked'); END",
    )  # fmt: skip
    assert victim["status"] == "failed" and victim["attempts"] == 1, victim
    assert "locked" in victim["error"] and "\n" not in victim["error"], victim
