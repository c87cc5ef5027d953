"""A draft may name no agent (or, in workflow mode, no workflow): any client may write one
so, and the store keeps no other ticket without it. `ticket open`, `run-ticket` and
`ticket cancel` of such a draft fail with one line saying what is missing, exit 5, and
change nothing (tester h-204: the store's CHECK message, exit 6, which says the database
could not be used)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import Target
from tests.support.cli import swarm_inproc


@pytest.mark.parametrize(("mode", "field"), [("workflow", "workflow_id"), ("single", "agent_id")])
def test_a_draft_without_its_agent_or_workflow_is_refused_with_one_line(
    store_target: Target, tmp_path: Path, mode: str, field: str
) -> None:
    home = tmp_path / "home"
    env = store_target.env
    assert swarm_inproc(home, "status", "--init", **env).returncode == 0
    store_target.sql(
        f"INSERT INTO tickets (title, status, execution_mode) VALUES ('d', 'draft', '{mode}')"
    )
    for args, doing in (
        (("ticket", "open", "1"), "queued"),
        (("run-ticket", "1"), "queued"),
        (("run-ticket", "1", "--wait"), "run"),  # (it said `workflow_id is empty`)
        (("ticket", "cancel", "1"), "cancelled"),
    ):
        done = swarm_inproc(home, *args, **env)
        assert done.returncode == 5, (args, done.stdout, done.stderr)
        assert done.stderr == (
            f"error: ticket 1 is a draft with no {field} (only a draft may lack it): it"
            f" cannot be {doing}; set its {field}, or delete the draft\n"
        ), done.stderr
    [row] = store_target.rows("SELECT status FROM tickets")
    assert row["status"] == "draft"  # nothing changed
    target = "workflow_id = 'w'" if mode == "workflow" else "agent_id = 'echo'"
    store_target.sql(f"UPDATE tickets SET {target} WHERE id = 1")  # what the line says
    assert swarm_inproc(home, "ticket", "cancel", "1", **env).returncode == 0
