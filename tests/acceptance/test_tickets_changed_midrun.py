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
from tests.conftest import Target
from tests.support.cli import query, sqlite_shell, start_engine, swarm, swarm_inproc, wait_until

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5", "SWARM_LEASE_TTL": "6"}
"""A short lease: before the fix, the victim came back only when its lease ran out."""

VICTIM = "(SELECT id FROM tickets WHERE title = 'victim')"


def make_tickets(
    home: Path, tmp_path: Path, command: str = "echo hi", env: dict[str, str] | None = None
) -> None:
    env = env or {}
    write_agent(tmp_path / "say", f"name: say\nkind: shell\ncommand: {command}\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "say"), **env).returncode == 0
    for title in ("victim", "bystander"):
        done = swarm_inproc(home, "ticket", "create", "--title", title, "--agent", "say", **env)
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
        # the ticket's 'done' refused, its 'failed' allowed: failed once, at once
        ("the run's end",
         "BEFORE UPDATE OF status ON tickets WHEN NEW.id = {victim}"
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


def _pg_trigger(name: str, body: str, on: str = "UPDATE OF status") -> str:
    return (
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body}"
        f" RETURN NEW; END $$; CREATE TRIGGER {name} BEFORE {on} ON tickets"
        f" FOR EACH ROW EXECUTE FUNCTION {name}();"
    )


NO_END = {
    # 'done' and 'failed' both refused
    "refused": {
        "sqlite": "CREATE TRIGGER no_end BEFORE UPDATE OF status ON tickets"
        " WHEN OLD.title = 'victim' AND NEW.status IN ('done','failed')"
        " BEGIN SELECT RAISE(ABORT, 'no end here'); END;",
        "postgresql": _pg_trigger(
            "no_end",
            "IF OLD.title = 'victim' AND NEW.status IN ('done','failed')"
            " THEN RAISE EXCEPTION 'no end here'; END IF;",
        ),
    },
    # the row frozen once it is running: no status change, no lease renewal
    "frozen": {
        "sqlite": "CREATE TRIGGER no_end BEFORE UPDATE OF status, lease_expires_at,"
        " attempt_id, error ON tickets WHEN OLD.title = 'victim' AND OLD.status = 'running'"
        " BEGIN SELECT RAISE(ABORT, 'no end here'); END;",
        "postgresql": _pg_trigger(
            "no_end",
            "IF OLD.title = 'victim' AND OLD.status = 'running'"
            " THEN RAISE EXCEPTION 'no end here'; END IF;",
            "UPDATE OF status, lease_expires_at, attempt_id, error",
        ),
    },
    # 'done' refused, 'failed' silently dropped
    "ignored": {
        "sqlite": "CREATE TRIGGER no_end BEFORE UPDATE OF status ON tickets"
        " WHEN OLD.title = 'victim' AND NEW.status = 'done'"
        " BEGIN SELECT RAISE(ABORT, 'no end here'); END;"
        " CREATE TRIGGER no_fail BEFORE UPDATE OF status ON tickets"
        " WHEN OLD.title = 'victim' AND NEW.status = 'failed'"
        " BEGIN SELECT RAISE(IGNORE); END;",
        "postgresql": _pg_trigger(
            "no_end",
            "IF OLD.title = 'victim' AND NEW.status = 'done'"
            " THEN RAISE EXCEPTION 'no end here'; END IF;"
            " IF OLD.title = 'victim' AND NEW.status = 'failed' THEN RETURN NULL; END IF;",
        ),
    },
    # its start refused ('running'), and 'failed' too: it never runs, and has no run row
    "unstarted": {
        "sqlite": "CREATE TRIGGER no_end BEFORE UPDATE OF status ON tickets"
        " WHEN OLD.title = 'victim' AND NEW.status IN ('running','failed')"
        " BEGIN SELECT RAISE(ABORT, 'no end here'); END;",
        "postgresql": _pg_trigger(
            "no_end",
            "IF OLD.title = 'victim' AND NEW.status IN ('running','failed')"
            " THEN RAISE EXCEPTION 'no end here'; END IF;",
        ),
    },
}
"""Triggers that refuse every end of the victim the engine could write."""


@pytest.mark.parametrize("kind", sorted(NO_END))
def test_a_ticket_whose_every_end_is_refused_runs_once_and_the_engine_ends(
    store_target: Target, tmp_path: Path, kind: str
) -> None:
    """The store refuses the run's end and the failing of the ticket too. Before, the run
    was abandoned and the ticket left `running` with its lease: reclaimed when the lease
    ran out, it ran again, three times in all, then stayed `running` for good (the
    reclaim's 'failed' refused too) and `start --until-idle` never ended. Now it runs
    once: its run is closed `ended unrecorded: ...`, one line is logged, the ticket is
    left as the store keeps it and no engine (nor `cleanup`) runs it again. A start the
    store refuses, with the failing, was re-queued in the same way: the attempt now gets
    a run row so closed, and the ticket, never run, stays `claimed`."""
    home = tmp_path / "home"
    env = {**FAST, **store_target.env}
    assert swarm_inproc(home, "status", "--init", **env).returncode == 0
    make_tickets(home, tmp_path, env=env)
    store_target.sql(NO_END[kind][store_target.dialect])
    done = swarm(home, "start", "--foreground", "--until-idle", "--max-vms", "1",
                 timeout=60, **env)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in out, out
    rows = {r["title"]: r for r in store_target.rows("SELECT * FROM tickets")}
    assert rows["bystander"]["status"] == "done", rows
    victim = rows["victim"]
    left = "claimed" if kind == "unstarted" else "running"
    assert victim["status"] == left and victim["attempts"] == 1, victim
    said = [line for line in out.splitlines() if "WARNING" in line]
    assert len(said) == 1 and f"ticket {victim['id']}: " in said[0], out
    assert "could not be recorded: the store refused it (" in said[0], out
    assert "the store refused to fail the ticket too" in said[0], out
    assert "lease" not in out.replace("renewal of its lease", ""), out

    def victim_runs() -> list[dict[str, Any]]:
        return store_target.rows(
            f"SELECT status, error FROM workflow_runs WHERE ticket_id = {victim['id']}"
        )

    (run,) = victim_runs()
    assert run["status"] == "failed" and run["error"].startswith("ended unrecorded: "), run
    # its lease runs out (moved in the store, with the trigger gone): no reclaim takes it
    store_target.sql(
        "DROP TRIGGER no_end" + ("" if store_target.dialect == "sqlite" else " ON tickets")
    )
    store_target.sql("UPDATE tickets SET lease_expires_at = '2000-01-01T00:00:00Z'")
    assert swarm_inproc(home, "cleanup", **store_target.env).returncode == 0
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=60, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    again = {r["title"]: r for r in store_target.rows("SELECT * FROM tickets")}["victim"]
    assert again["status"] == left and again["attempts"] == 1, again
    assert len(victim_runs()) == 1
    # a user ends it
    cancel = swarm_inproc(home, "ticket", "cancel", str(victim["id"]), **env)
    assert cancel.returncode == 0, cancel.stderr


def test_run_ticket_says_why_a_ticket_whose_every_end_is_refused_stayed_running(
    home: Path, tmp_path: Path
) -> None:
    """`run-ticket --wait` on such a ticket: exit 1, its error line the run's (it said
    `error: ticket 1 running: None`)."""
    make_tickets(home, tmp_path)
    sqlite_shell(home / "tickets.db", NO_END["refused"]["sqlite"])
    (victim,) = query(home / "tickets.db", "SELECT id FROM tickets WHERE title = 'victim'")
    done = swarm(home, "run-ticket", str(victim["id"]), "--wait", timeout=60, **FAST)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: ticket {victim['id']} running: ended unrecorded: the run's end could not be"
        " recorded: the store refused it (no end here); failing the ticket was refused too"
        " (no end here)"
    ], done.stderr
