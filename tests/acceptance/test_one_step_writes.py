"""A run of one step writes its start with its step's row and the step's end with the run's
end (docs/engine.md, Running a ticket): every row is still there, in order, with the same
statuses as a run whose writes are apart."""

from __future__ import annotations

import json
from pathlib import Path

from tests.acceptance.conftest import write_agent
from tests.support.cli import query, sqlite_shell, swarm, swarm_inproc


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
