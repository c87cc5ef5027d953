"""`run-ticket ID --wait` runs the row as its claim found it. Another client may change
the ticket between the command's first read and its claim (its VM backend is made ready,
its engine registered and gone engines reaped in between: about 0.1 s with QEMU): a
trigger on the engine's own registration makes that moment certain here. The plan of the
row read first ran the old agent while the run recorded the new one, on the new inputs."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from tests.support.cli import query, swarm, swarm_inproc


def _changed_at_registration(
    tmp_path: Path, change: str
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A home with one open echo ticket that `change` (SQL SET clause) rewrites as the
    engine of `run-ticket 1 --wait` registers; the finished command."""
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    conn = sqlite3.connect(home / "tickets.db")
    with conn:
        conn.execute(
            "INSERT INTO tickets (title, status, agent_id, inputs)"
            " VALUES ('x', 'open', 'echo', '{\"first\": true}')"
        )
        conn.execute(
            f"CREATE TRIGGER meddle AFTER INSERT ON engines BEGIN UPDATE tickets SET {change}"
            " WHERE id = 1; END"
        )
    conn.close()
    ran = swarm(home, "run-ticket", "1", "--wait", timeout=120)
    assert "Traceback" not in ran.stdout + ran.stderr, ran.stderr
    return home, ran


def test_the_agent_and_inputs_as_claimed_are_what_runs_and_is_recorded(tmp_path: Path) -> None:
    home, ran = _changed_at_registration(
        tmp_path, "agent_id = 'shell', inputs = '{\"command\": \"echo CHANGED\"}'"
    )
    assert ran.returncode == 0
    (ticket,) = query(home / "tickets.db", "SELECT status, agent_id, result FROM tickets")
    assert ticket["status"] == "done" and ticket["agent_id"] == "shell"
    assert json.loads(ticket["result"])["stdout"].strip() == "CHANGED"  # the shell agent ran
    (step,) = query(home / "tickets.db", "SELECT agent_name FROM step_executions")
    assert step["agent_name"] == "shell"


def test_a_claimed_row_whose_agent_is_now_unknown_fails_with_its_line(tmp_path: Path) -> None:
    home, ran = _changed_at_registration(tmp_path, "agent_id = 'nobody'")
    assert ran.returncode == 1
    (ticket,) = query(home / "tickets.db", "SELECT status, error FROM tickets")
    assert ticket["status"] == "failed" and ticket["error"].startswith("unknown agent 'nobody'")
    assert not query(home / "tickets.db", "SELECT 1 FROM step_executions")


def test_a_row_changed_to_no_count_of_attempts_and_malformed_is_refused_at_once(
    tmp_path: Path,
) -> None:
    """Changed to attempts -5 and a priority that is no integer: the claim counts no
    attempt, and the ticket is refused at once with the attempts' line. Before, the changed
    row's plan raised the malformed row's line first and the ticket stayed `claimed`,
    uncounted, until its lease ran out."""
    home, ran = _changed_at_registration(tmp_path, "attempts = -5, priority = 'high'")
    assert ran.returncode == 5, ran.stdout + ran.stderr
    assert "attempts is -5, not a count" in ran.stderr
    (ticket,) = query(home / "tickets.db", "SELECT status, error, attempts FROM tickets")
    assert ticket["status"] == "failed" and "attempts is -5, not a count" in ticket["error"]
    assert ticket["attempts"] == -5
    assert not query(home / "tickets.db", "SELECT 1 FROM step_executions")
