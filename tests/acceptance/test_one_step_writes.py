"""A run of one step writes its start with its step's row and the step's end with the run's
end (docs/engine.md, Running a ticket): every row is still there, in order, with the same
statuses as a run whose writes are apart."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path

from tests.acceptance.conftest import write_agent
from tests.support.cli import query, sqlite_shell, start_engine, swarm, swarm_inproc

from swarm_engine.config import load_settings
from swarm_engine.engine.plan import Plan
from swarm_engine.engine.session import EngineSession
from swarm_engine.errors import SwarmError
from swarm_engine.store import Ticket


def test_a_one_step_ticket_records_every_row_in_order(home: Path) -> None:
    db = home / "tickets.db"
    swarm(home, "ticket", "create", "--title", "e", "--agent", "echo",
          "--inputs-json", '{"a": 1}', check=True)  # fmt: skip
    done = swarm(home, "run-ticket", "1", "--wait")
    assert done.returncode == 0, done.stderr
    (ticket,) = query(db, "SELECT * FROM tickets")
    (run,) = query(db, "SELECT * FROM workflow_runs")
    (step,) = query(db, "SELECT * FROM step_executions")
    (vm,) = query(db, "SELECT * FROM vms")
    assert ticket["status"] == run["status"] == step["status"] == "done"
    assert json.loads(step["inputs"]) == {"a": 1} and json.loads(step["outputs"]) == {"a": 1}
    assert step["retry_count"] == 0 and step["exit_code"] == 0 and step["log_path"]
    assert vm["state"] == "destroyed" and vm["step_execution_id"] == step["id"]
    # the run began with its step queued; the VM was gone before the step's end was
    # written, and that end before (or with) the run's and the ticket's
    assert run["started_at"] <= step["queued_at"] <= step["started_at"]
    assert step["started_at"] <= vm["destroyed_at"] <= step["completed_at"]
    assert step["completed_at"] <= run["completed_at"] <= ticket["completed_at"]


def test_a_one_step_ticket_whose_inputs_fail_the_schema_records_the_failed_step(
    home: Path, tmp_path: Path
) -> None:
    db = home / "tickets.db"
    write_agent(
        tmp_path / "typed",
        "name: typed\nkind: echo\n"
        "inputs: {type: object, properties: {n: {type: integer}}, required: [n]}\n",
    )
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "typed")).returncode == 0
    sqlite_shell(  # a writer that skipped the CLI's check of the inputs
        db,
        "INSERT INTO tickets (title, status, agent_id, inputs)"
        " VALUES ('t', 'open', 'typed', '{\"n\": \"not a number\"}');",
    )
    swarm(home, "run-ticket", "1", "--wait")
    (ticket,) = query(db, "SELECT * FROM tickets")
    (run,) = query(db, "SELECT * FROM workflow_runs")
    (step,) = query(db, "SELECT * FROM step_executions")
    assert ticket["status"] == run["status"] == step["status"] == "failed"
    assert step["error"].startswith("inputs: ") and "integer" in step["error"]
    assert query(db, "SELECT * FROM vms") == []  # no VM was booted for it


def test_the_daemon_starts_each_run_with_its_claim_and_records_every_row_in_order(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """The daemon starts a ticket's run (and its only step's row) in the hand-off that
    claims it, and the step's log file is opened while its VM boots: every row and file is
    there as when each write came apart; a ticket that cannot be planned fails alone."""
    db = home / "tickets.db"
    write_agent(
        tmp_path / "say", "name: say\nkind: shell\ncommand: echo said-$(cat $SWARM_INPUTS)\n"
    )
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "say")).returncode == 0
    for i in range(8):
        agent = "ghost" if i == 3 else ("say" if i % 2 else "echo")
        sqlite_shell(db, "INSERT INTO tickets (title, status, agent_id, inputs)"
                         f" VALUES ('t{i}', 'open', '{agent}', '{{\"i\": {i}}}')")  # fmt: skip
    proc = start_engine(home, "--max-vms", "3", "--until-idle")
    engines.append(proc)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    tickets = query(db, "SELECT * FROM tickets ORDER BY id")
    runs = {r["ticket_id"]: r for r in query(db, "SELECT * FROM workflow_runs")}
    assert len(runs) == len(tickets) == 8  # one run each
    for ticket in tickets:
        run = runs[ticket["id"]]
        assert ticket["claimed_at"] <= run["started_at"] <= run["completed_at"]
        if ticket["agent_id"] == "ghost":
            assert ticket["status"] == run["status"] == "failed"
            assert "unknown agent 'ghost'" in ticket["error"]
            assert query(db, "SELECT * FROM step_executions WHERE run_id = ?", run["id"]) == []
            continue
        (step,) = query(db, "SELECT * FROM step_executions WHERE run_id = ?", run["id"])
        (vm,) = query(db, "SELECT * FROM vms WHERE step_execution_id = ?", step["id"])
        assert ticket["status"] == run["status"] == step["status"] == "done", ticket["error"]
        assert run["started_at"] <= step["queued_at"] <= vm["created_at"] <= step["started_at"]
        assert step["started_at"] <= vm["destroyed_at"] <= step["completed_at"]
        assert step["completed_at"] <= run["completed_at"] <= ticket["completed_at"]
        log_text = Path(step["log_path"]).read_text()
        if ticket["agent_id"] == "say":
            assert log_text == f"said-{ticket['inputs']}\n"
        else:
            assert json.loads(log_text) == {"i": int(ticket["title"][1:])}


def test_a_run_its_claim_could_not_start_is_started_apart(home: Path) -> None:
    """When the claim's hand-off cannot start the run (here an outside writer's trigger
    refuses runs for a moment), the ticket stays claimed with no run, and the runner then
    starts it as ever."""
    db = home / "tickets.db"
    swarm(home, "ticket", "create", "--title", "e", "--agent", "echo",
          "--inputs-json", '{"a": 1}', check=True)  # fmt: skip
    sqlite_shell(db, "CREATE TRIGGER no_runs BEFORE INSERT ON workflow_runs"
                     " BEGIN SELECT RAISE(ABORT, 'no runs now'); END")  # fmt: skip

    async def claim_then_run() -> tuple[Plan | SwarmError | None, object, Ticket | None]:
        settings = load_settings(home=str(home))
        async with EngineSession(settings, kind="daemon", max_vms=1) as session:
            ((ticket, plan, started),) = await session.gate(
                session.claim_planned, attempt_id=uuid.uuid4().hex, limit=1
            )
            assert ticket.status == "claimed"
            assert query(db, "SELECT * FROM workflow_runs") == []
            sqlite_shell(db, "DROP TRIGGER no_runs")
            return plan, started, await session.run_claimed(ticket, None, plan, started)

    plan, started, final = asyncio.run(claim_then_run())
    assert isinstance(plan, Plan) and started is None
    assert final is not None and final.status == "done"
    (run,) = query(db, "SELECT * FROM workflow_runs")
    (step,) = query(db, "SELECT * FROM step_executions")
    assert run["status"] == step["status"] == "done"
    assert json.loads(step["outputs"]) == {"a": 1}
