"""A run keeps the package copy it was planned with until it ends: `agent register
--force` with other files while a workflow of that agent runs leaves the run's copy in
place (held), its later step runs those files and the ticket ends `done` (before, every
later step failed: `... are not the ones this step was planned with`). A ticket planned
after the registration runs the new files; once both runs ended, `cleanup` leaves only
the current copy. Real engine, real sandboxes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.acceptance.conftest import engine_ready, write_agent, write_workflow
from tests.support.cli import query, start_engine, swarm, wait_until

from swarm_engine.package_folders import is_copy_of

# each step prints its package's `which.txt`; the first waits until the test puts a file
# `go` in its workspace (as long as the test needs)
SCRIPT = (
    'cat which.txt\nif [ "$INPUT_WAIT" = yes ]; then until [ -e go ]; do sleep 0.05; done; fi\n'
)
AGENT = "name: pinned\nkind: shell\ntimeout_seconds: 120\ncommand: sh run.sh\n"
WORKFLOW = """\
name: two-steps
steps:
  - id: first
    agent: pinned
    inputs: {wait: "yes"}
  - id: second
    agent: pinned
    needs: [first]
    inputs: {wait: "no"}
"""


def _package(folder: Path, which: str) -> Path:
    return write_agent(folder, AGENT, {"run.sh": SCRIPT, "which.txt": which + "\n"})


def _release_first_step(db: Path, ticket_id: int) -> None:
    """Put `go` in the workspace of the ticket's running first step."""
    sql = (
        "SELECT v.workspace FROM step_executions s JOIN workflow_runs r ON r.id = s.run_id"
        " JOIN vms v ON v.id = s.vm_id WHERE r.ticket_id = ? AND s.step_id = 'first'"
        " AND s.status = 'running'"
    )
    (row,) = wait_until(lambda: query(db, sql, ticket_id), 60, "the first step to run")
    (Path(row["workspace"]) / "go").write_text("")


def _ended(db: Path, ticket_id: int) -> dict[str, object]:
    def done() -> dict[str, object] | None:
        (row,) = query(db, "SELECT status, error FROM tickets WHERE id = ?", ticket_id)
        return row if row["status"] in ("done", "failed", "cancelled") else None

    return wait_until(done, 120, f"ticket {ticket_id} to end")


def _printed(db: Path, ticket_id: int) -> dict[str, str]:
    rows = query(
        db,
        "SELECT s.step_id, s.outputs FROM step_executions s JOIN workflow_runs r"
        " ON r.id = s.run_id WHERE r.ticket_id = ? AND s.status = 'done'",
        ticket_id,
    )
    return {str(r["step_id"]): json.loads(str(r["outputs"]))["stdout"] for r in rows}


def _ticket(home: Path) -> int:
    done = swarm(
        home, "ticket", "create", "--title", "t", "--workflow", "two-steps", "--json", check=True
    )
    return int(json.loads(done.stdout)["id"])


def test_a_workflow_runs_the_files_it_was_planned_with_through_a_re_registration(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    folder = home / "packages" / "pinned"
    swarm(home, "agent", "register", str(_package(tmp_path / "old", "OLD")), check=True)
    swarm(home, "workflow", "register", str(write_workflow(tmp_path / "wf", WORKFLOW)), check=True)
    planned_copy = os.readlink(folder / "1.0.0")
    engines.append(start_engine(home, "--max-vms", "2", "--poll-interval", "0.2"))
    engine_ready(home, engines[0])
    first = _ticket(home)
    wait_until(
        lambda: query(db, "SELECT 1 FROM step_executions WHERE status = 'running'"),
        60,
        "the first step to run",
    )
    swarm(home, "agent", "register", "--force", str(_package(tmp_path / "new", "NEW")), check=True)
    assert os.readlink(folder / "1.0.0") != planned_copy  # the new files are linked
    assert (folder / planned_copy / "which.txt").read_text() == "OLD\n"  # held: still there
    _release_first_step(db, first)
    row = _ended(db, first)
    assert row["status"] == "done", row
    assert _printed(db, first) == {"first": "OLD\n", "second": "OLD\n"}

    second = _ticket(home)  # planned after the registration: the new files
    _release_first_step(db, second)
    row = _ended(db, second)
    assert row["status"] == "done", row
    assert _printed(db, second) == {"first": "NEW\n", "second": "NEW\n"}

    done = swarm(home, "cleanup", "--json", check=True)
    assert json.loads(done.stdout)["packages"] == [f"pinned/{planned_copy}"]
    current = os.readlink(folder / "1.0.0")
    assert [e for e in os.listdir(folder) if is_copy_of(e, "1.0.0")] == [current]
    assert (folder / current / "which.txt").read_text() == "NEW\n"
