"""Triggers that silently IGNORE (or refuse) an engine's claim, or its close of a run: the
other tickets run, that ticket fails with one line (or is passed over), no run is left
`running` that no engine holds, and `start --until-idle` ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.acceptance.conftest import write_agent
from tests.conftest import Target
from tests.support.cli import query, sqlite_shell, swarm, swarm_inproc

FAST: dict[str, Any] = {
    "SWARM_HEARTBEAT_INTERVAL": "0.3",
    "SWARM_POLL_INTERVAL": "0.5",
    "SWARM_LEASE_TTL": "3",
}

IGNORE_CLAIM = (
    "CREATE TRIGGER t BEFORE UPDATE OF status ON tickets"
    " WHEN NEW.status = 'claimed' AND OLD.id = 1 BEGIN SELECT RAISE(IGNORE); END;"
)


def make_tickets(home: Path, tmp_path: Path, n: int = 3, **env: str) -> None:
    write_agent(tmp_path / "say", "name: say\nkind: shell\ncommand: echo hi\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "say"), **env).returncode == 0
    for i in range(n):
        done = swarm_inproc(home, "ticket", "create", "--title", f"t{i}", "--agent", "say", **env)
        assert done.returncode == 0, done.stderr


def start(home: Path, max_vms: int) -> str:
    done = swarm(home, "start", "--foreground", "--until-idle", "--max-vms", str(max_vms),
                 timeout=60, **FAST)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in out, out
    return out


def statuses(home: Path) -> dict[int, str]:
    rows = query(home / "tickets.db", "SELECT id, status FROM tickets")
    return {int(r["id"]): str(r["status"]) for r in rows}


def test_an_ignored_claim_fails_that_ticket_and_the_others_run(home: Path, tmp_path: Path) -> None:
    for max_vms in (1, 4):
        case = home / str(max_vms)
        make_tickets(case, tmp_path)
        sqlite_shell(case / "tickets.db", IGNORE_CLAIM)
        out = start(case, max_vms)
        assert statuses(case) == {1: "failed", 2: "done", 3: "done"}, out
        (row,) = query(case / "tickets.db", "SELECT error FROM tickets WHERE id = 1")
        assert row["error"].startswith("the store ignored its claim without an error"), row


def test_an_ignored_claim_and_failing_passes_the_ticket_over(home: Path, tmp_path: Path) -> None:
    make_tickets(home, tmp_path)
    sqlite_shell(
        home / "tickets.db",
        "CREATE TRIGGER t BEFORE UPDATE OF status ON tickets WHEN OLD.id = 1"
        " BEGIN SELECT RAISE(IGNORE); END;",
    )
    out = start(home, 1)
    assert statuses(home) == {1: "open", 2: "done", 3: "done"}, out
    said = [line for line in out.splitlines() if "WARNING" in line]
    assert len(said) == 1 and "ticket 1: " in said[0] and "passes it over" in said[0], out


def test_run_ticket_says_its_claim_was_ignored(home: Path, tmp_path: Path) -> None:
    make_tickets(home, tmp_path, n=1)
    sqlite_shell(home / "tickets.db", IGNORE_CLAIM)
    done = swarm(home, "run-ticket", "1", "--wait", timeout=60, **FAST)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "still has a run going" not in done.stderr, done.stderr
    assert "error: ticket 1: the store ignored its claim without an error" in done.stderr


IGNORE_CLOSE = (
    "CREATE TRIGGER t BEFORE UPDATE ON workflow_runs WHEN NEW.status <> 'running'"
    " AND NEW.ticket_id = 1 BEGIN SELECT RAISE(IGNORE); END;"
)


def test_a_run_close_the_store_ignores_fails_the_ticket_and_lets_go_of_the_run(
    home: Path, tmp_path: Path
) -> None:
    """Before: the ticket was `done` and its run `running` on that engine for ever (a
    reopen then waited for that engine, the claim guard)."""
    make_tickets(home, tmp_path, n=2)
    sqlite_shell(home / "tickets.db", IGNORE_CLOSE)
    out = start(home, 1)
    assert statuses(home) == {1: "failed", 2: "done"}, out
    (ticket,) = query(home / "tickets.db", "SELECT error FROM tickets WHERE id = 1")
    assert ticket["error"] == (
        "the run's end could not be recorded: the store refused it (the store ignored the"
        " run's close without an error (a trigger's RAISE(IGNORE)?))"
    ), ticket
    (run,) = query(home / "tickets.db", "SELECT * FROM workflow_runs WHERE ticket_id = 1")
    assert run["status"] == "running" and run["engine_id"] is None, run  # held by none
    said = [line for line in out.splitlines() if "WARNING" in line]
    assert len(said) == 1 and "ticket 1 failed: the run's end could not be recorded" in said[0]
    # reopened, it runs again at once (no run of a live engine to wait for)
    assert swarm_inproc(home, "ticket", "reopen", "1").returncode == 0
    out = start(home, 1)
    assert statuses(home) == {1: "failed", 2: "done"}, out
    assert len(query(home / "tickets.db", "SELECT id FROM workflow_runs WHERE ticket_id = 1")) == 2


NO_END_AT_ALL = (
    "CREATE TRIGGER a BEFORE UPDATE OF status ON tickets WHEN OLD.id = 1"
    " AND OLD.status = 'running' BEGIN SELECT RAISE(ABORT, 'no ticket end'); END;"
    "CREATE TRIGGER b BEFORE UPDATE OF status ON workflow_runs WHEN OLD.ticket_id = 1"
    " BEGIN SELECT RAISE(ABORT, 'no run end'); END;"
)


def test_a_ticket_whose_end_and_run_close_are_refused_runs_once_and_the_engine_ends(
    home: Path, tmp_path: Path
) -> None:
    """Before: `--until-idle` never ended, `lease ran out, ...` was logged every lease,
    and the run's end line said `ticket 1: ticket 1: `."""
    make_tickets(home, tmp_path, n=2)
    sqlite_shell(home / "tickets.db", NO_END_AT_ALL)
    out = start(home, 1)
    assert statuses(home) == {1: "running", 2: "done"}, out
    assert "ticket 1: ticket 1:" not in out, out
    said = [line for line in out.splitlines() if "WARNING" in line]
    assert len(said) == 1, out
    assert "ticket 1: the run's end could not be recorded: the store refused it (no" in said[0]
    assert "close its run too (no run end)" in said[0], out
    (run,) = query(home / "tickets.db", "SELECT status FROM workflow_runs WHERE ticket_id = 1")
    assert run["status"] == "running"
    # an engine that meets its expired lease says so once, and ends too
    sqlite_shell(home / "tickets.db", "UPDATE engines SET state = 'stopped';")
    assert swarm_inproc(home, "ticket", "create", "--title", "t9", "--agent", "say").returncode == 0
    out = start(home, 1)
    said = [line for line in out.splitlines() if "lease ran out" in line]
    assert len(said) <= 1, out


PG_IGNORE_CLAIM = (
    "CREATE FUNCTION ign() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    " IF NEW.status = 'claimed' AND OLD.id = 1 THEN RETURN NULL; END IF; RETURN NEW; END $$;"
    " CREATE TRIGGER t BEFORE UPDATE OF status ON tickets FOR EACH ROW EXECUTE FUNCTION ign();"
)


def test_an_ignored_claim_on_either_store(store_target: Target, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**FAST, **store_target.env}
    assert swarm_inproc(home, "status", "--init", **env).returncode == 0
    make_tickets(home, tmp_path, 3, **store_target.env)
    store_target.sql(IGNORE_CLAIM if store_target.dialect == "sqlite" else PG_IGNORE_CLAIM)
    done = swarm(home, "start", "--foreground", "--until-idle", "--max-vms", "1",
                 timeout=60, **env)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in out, out
    rows = store_target.rows("SELECT id, status, error FROM tickets ORDER BY id")
    assert [r["status"] for r in rows] == ["failed", "done", "done"], out
    assert rows[0]["error"].startswith("the store ignored its claim without an error"), rows
