"""A run's heading on the dashboard names the workflow it ran as its row holds it: a row
without a version (any client may write one) shows the name alone, not `name@None`
(tester h-195)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.support.api import start_api
from tests.support.cli import swarm_inproc


def test_a_run_without_a_workflow_version_shows_its_name_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    conn = sqlite3.connect(home / "tickets.db")
    with conn:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(
            "INSERT INTO tickets (id, title, status, execution_mode, workflow_id)"
            " VALUES (1, 't', 'done', 'workflow', 'report')"
        )
        for attempt, version in ((1, None), (2, "1.0.0")):
            conn.execute(
                "INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, execution_mode,"
                " workflow_name, workflow_version, status) VALUES (1, ?, ?, 'workflow',"
                " 'report', ?, 'done')",
                (attempt, f"a{attempt}", version),
            )
    conn.close()
    api = start_api(home)
    try:
        for path in ("/ui/tickets/1", "/ui/tickets/1/runs"):
            page = api.get(path)
            assert page.status_code == 200, page.text
            assert "None" not in page.text, path
            assert "workflow report · " in page.text and "workflow report@1.0.0 · " in page.text
    finally:
        api.stop()
