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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.acceptance.conftest import engine_ready, write_agent, write_workflow
from tests.support.cli import query, start_engine, swarm, wait_until
from tests.support.postgres import pg_query

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


Rows = Callable[[str], list[dict[str, Any]]]
"""Rows of one SQL statement on the tickets store (SQLite or PostgreSQL)."""


def _release_first_step(rows: Rows, ticket_id: int) -> None:
    """Put `go` in the workspace of the ticket's running first step."""
    sql = (
        "SELECT v.workspace FROM step_executions s JOIN workflow_runs r ON r.id = s.run_id"
        f" JOIN vms v ON v.id = s.vm_id WHERE r.ticket_id = {int(ticket_id)}"
        " AND s.step_id = 'first' AND s.status = 'running'"
    )
    (row,) = wait_until(lambda: rows(sql), 60, "the first step to run")
    (Path(row["workspace"]) / "go").write_text("")


def _ended(rows: Rows, ticket_id: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        (row,) = rows(f"SELECT status, error FROM tickets WHERE id = {int(ticket_id)}")
        return row if row["status"] in ("done", "failed", "cancelled") else None

    return wait_until(done, 120, f"ticket {ticket_id} to end")


def _printed(rows: Rows, ticket_id: int) -> dict[str, str]:
    found = rows(
        "SELECT s.step_id, s.outputs FROM step_executions s JOIN workflow_runs r"
        f" ON r.id = s.run_id WHERE r.ticket_id = {int(ticket_id)} AND s.status = 'done'"
    )
    out = {}
    for r in found:
        outputs = r["outputs"] if isinstance(r["outputs"], dict) else json.loads(r["outputs"])
        out[str(r["step_id"])] = outputs["stdout"]
    return out


def _ticket(home: Path, **env: str) -> int:
    done = swarm(
        home, "ticket", "create", "--title", "t", "--workflow", "two-steps", "--json",
        check=True, **env,
    )  # fmt: skip
    return int(json.loads(done.stdout)["id"])


def test_a_workflow_runs_the_files_it_was_planned_with_through_a_re_registration(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    rows: Rows = lambda sql: query(db, sql)  # noqa: E731
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
    _release_first_step(rows, first)
    row = _ended(rows, first)
    assert row["status"] == "done", row
    assert _printed(rows, first) == {"first": "OLD\n", "second": "OLD\n"}

    second = _ticket(home)  # planned after the registration: the new files
    _release_first_step(rows, second)
    row = _ended(rows, second)
    assert row["status"] == "done", row
    assert _printed(rows, second) == {"first": "NEW\n", "second": "NEW\n"}

    done = swarm(home, "cleanup", "--json", check=True)
    assert json.loads(done.stdout)["packages"] == [f"pinned/{planned_copy}"]
    current = os.readlink(folder / "1.0.0")
    assert [e for e in os.listdir(folder) if is_copy_of(e, "1.0.0")] == [current]
    assert (folder / current / "which.txt").read_text() == "NEW\n"


def test_across_hosts_a_run_keeps_its_hosts_copy_and_a_stale_host_says_so(
    pg_url: str, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """Two hosts (own homes) on one PostgreSQL database; host2 runs the engine. While
    host2 runs a workflow planned with the old files, host1 registers other files
    (`--force`): a ticket planned after it fails on host2, whose copy is stale, with the
    line that says so; then host2 registers the new files too (its link now names them),
    and the running workflow still ends `done` with the old files. A new ticket runs the
    new files, and `cleanup` leaves host2 only the current copy."""
    h1, h2 = tmp_path / "h1", tmp_path / "h2"
    env1 = {"SWARM_DATABASE_URL": pg_url, "SWARM_HOST_ID": "host1"}
    env2 = {"SWARM_DATABASE_URL": pg_url, "SWARM_HOST_ID": "host2"}
    rows: Rows = lambda sql: pg_query(pg_url, sql)  # noqa: E731
    old, new = _package(tmp_path / "old", "OLD"), _package(tmp_path / "new", "NEW")
    swarm(h1, "agent", "register", str(old), check=True, **env1)
    swarm(h2, "agent", "register", str(old), check=True, **env2)  # its copy on host2 too
    wf = write_workflow(tmp_path / "wf", WORKFLOW)
    swarm(h1, "workflow", "register", str(wf), check=True, **env1)
    folder = h2 / "packages" / "pinned"
    planned_copy = os.readlink(folder / "1.0.0")
    engines.append(start_engine(h2, "--max-vms", "2", "--poll-interval", "0.2", **env2))
    first = _ticket(h1, **env1)
    running = "SELECT 1 FROM step_executions WHERE status = 'running'"
    wait_until(lambda: rows(running), 60, "the first step to run")
    swarm(h1, "agent", "register", "--force", str(new), check=True, **env1)

    stale = _ticket(h1, **env1)  # planned with the new digest: host2 has the old files
    row = _ended(rows, stale)
    assert row["status"] == "failed", row
    assert "differ from the ones this step was planned with" in str(row["error"]), row
    assert "registering it on this host again fixes it" in str(row["error"]), row

    swarm(h2, "agent", "register", str(new), check=True, **env2)  # the new files, here too
    assert os.readlink(folder / "1.0.0") != planned_copy
    _release_first_step(rows, first)
    row = _ended(rows, first)
    assert row["status"] == "done", row
    assert _printed(rows, first) == {"first": "OLD\n", "second": "OLD\n"}

    last = _ticket(h1, **env1)
    _release_first_step(rows, last)
    row = _ended(rows, last)
    assert row["status"] == "done", row
    assert _printed(rows, last) == {"first": "NEW\n", "second": "NEW\n"}
    done = swarm(h2, "cleanup", "--json", check=True, **env2)
    assert json.loads(done.stdout)["packages"] == [f"pinned/{planned_copy}"]
    current = os.readlink(folder / "1.0.0")
    assert [e for e in os.listdir(folder) if is_copy_of(e, "1.0.0")] == [current]
