"""Every VM a step boots has one `vms` row, under that step, that ends destroyed or failed:
one per VM that was booted, linked to its step, never more alive at once than
`--max-vms`; no row (never one left `booting`) for a VM that could not be had at all,
and none left `booting` by a ticket whose timeout or cancel cut its VM's boot short (nor
its VM's folder left on the host).
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from tests.acceptance.conftest import write_workflow
from tests.acceptance.test_daemon import FAST, peak_concurrency
from tests.support.cli import (
    insert_agent_row,
    insert_open_tickets,
    query,
    start_engine,
    swarm_inproc,
)

from swarm_engine.models import AgentSpec


def _run_until_idle(home: Path, *args: str) -> str:
    proc = start_engine(home, *args, "--until-idle", **FAST)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    return out


def test_each_step_has_one_vm_row_that_ends_destroyed(home: Path) -> None:
    """24 tickets (echo, a shell command that fails, one that succeeds) on 3 slots: one VM
    row per step, the step's `vm_id` and the VM's `step_execution_id` naming each other,
    every VM destroyed, no more than 3 alive at once."""
    db = home / "tickets.db"
    rows = []
    for i in range(8):
        rows += [
            (f"e{i}", "echo", json.dumps({"i": i})),
            (f"f{i}", "shell", json.dumps({"command": "exit 3"})),
            (f"s{i}", "shell", json.dumps({"command": "echo ok"})),
        ]
    insert_open_tickets(db, rows)
    _run_until_idle(home, "--max-vms", "3")
    tickets = query(db, "SELECT title, status FROM tickets")
    assert {t["title"][0] + t["status"] for t in tickets} == {"edone", "ffailed", "sdone"}
    steps = query(db, "SELECT id, vm_id FROM step_executions")
    vms = query(db, "SELECT id, state, step_execution_id, created_at, destroyed_at FROM vms")
    assert len(steps) == len(vms) == 24
    assert {v["state"] for v in vms} == {"destroyed"}, vms
    assert {(s["vm_id"], s["id"]) for s in steps} == {
        (v["id"], v["step_execution_id"]) for v in vms
    }
    assert peak_concurrency(vms) <= 3


def test_a_vm_that_is_never_booted_leaves_no_row(home: Path) -> None:
    """An agent (as any writer of the registry may store it) whose VM asks for a backend
    that does not exist: its ticket fails with one line naming it, no VM row is written
    for it, and the tickets around it run."""
    spec = AgentSpec.model_validate(
        {"name": "nowhere", "kind": "echo", "vm": {"backend": "no-such-backend"}}
    )
    insert_agent_row(home, spec)
    db = home / "tickets.db"
    insert_open_tickets(
        db, [("before", "echo", "{}"), ("odd", "nowhere", "{}"), ("after", "echo", "{}")]
    )
    _run_until_idle(home, "--max-vms", "2")
    by_title = {t["title"]: t for t in query(db, "SELECT title, status, error FROM tickets")}
    assert by_title["before"]["status"] == by_title["after"]["status"] == "done"
    odd = by_title["odd"]
    assert odd["status"] == "failed" and "no-such-backend" in odd["error"], odd
    assert "\n" not in odd["error"]
    vms = query(db, "SELECT state, backend FROM vms")
    assert vms == [{"state": "destroyed", "backend": "process"}] * 2, vms
    (step,) = query(db, "SELECT s.vm_id FROM step_executions s JOIN workflow_runs r"
                        " ON r.id = s.run_id JOIN tickets t ON t.id = r.ticket_id"
                        " WHERE t.title = 'odd'")  # fmt: skip
    assert step["vm_id"] is None


def test_steps_cut_short_at_their_vms_boot_leave_no_vm_folder(home: Path, tmp_path: Path) -> None:
    """Tickets whose timeout (1 to 24 ms) cuts their steps short as their VMs boot or get
    their inputs, alone and as parallel steps of workflows: once the engine stops, no VM
    folder is left for `cleanup` (a cancelled boot's folder was made by its worker thread
    after the cancel had cleaned up) and every VM row is closed."""
    write_workflow(
        tmp_path / "fan",
        """
        name: fan
        steps:
          - {id: a, agent: echo, inputs: {v: a}}
          - {id: b, agent: echo, inputs: {v: b}}
          - {id: c, agent: echo, inputs: {v: c}}
          - {id: d, agent: echo, inputs: {v: "${steps.a.outputs.v}"}}
        """,
    )
    assert swarm_inproc(home, "workflow", "register", str(tmp_path / "fan")).returncode == 0
    db = home / "tickets.db"
    conn = sqlite3.connect(db, timeout=30)
    try:
        with conn:
            for i in range(96):
                timeout, inputs = 0.001 * (1 + i % 24), json.dumps({"i": i, "pad": "x" * 4096})
                conn.execute(
                    "INSERT INTO tickets (title, status, agent_id, timeout_seconds, inputs)"
                    " VALUES (?, 'open', 'echo', ?, ?)",
                    (f"e{i}", timeout, inputs),
                )
                conn.execute(
                    "INSERT INTO tickets (title, status, execution_mode, workflow_id,"
                    " timeout_seconds) VALUES (?, 'open', 'workflow', 'fan', ?)",
                    (f"w{i}", timeout),
                )
    finally:
        conn.close()
    _run_until_idle(home, "--max-vms", "8")
    tickets = query(db, "SELECT title, status, error FROM tickets")
    assert {t["status"] for t in tickets} <= {"done", "failed"}, tickets
    vms = query(db, "SELECT id, state, error FROM vms")
    assert vms and {v["state"] for v in vms} <= {"destroyed", "failed"}, vms
    assert not [v for v in vms if "destroy failed" in (v["error"] or "")], vms
    left = sorted(os.listdir(home / "vms")) if (home / "vms").exists() else []
    assert left == [], f"{len(left)} VM folders left: {[v for v in vms if v['id'] in left]}"
