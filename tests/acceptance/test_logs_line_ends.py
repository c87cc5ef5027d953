"""`logs` prints each step's stored log as it is, and what follows it (the next step's
rule, the step's error) on a line of its own. The engine ends a stored log that ends
mid-line with a newline, but another client's chunk (the store is a public interface)
may end without one: it ran into the error line after it (`12345error: boom`), with and
without `--follow`."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.support.cli import sqlite_shell, swarm, swarm_inproc

NO_NEWLINE = """\
name: abrupt
kind: shell
command: "printf 12345; exit 3"
"""


@pytest.mark.parametrize("follow", [False, True], ids=["logs", "logs --follow"])
def test_a_log_that_ends_mid_line_is_followed_by_its_error_on_a_line_of_its_own(
    tmp_path: Path, follow: bool
) -> None:
    home = tmp_path / "home"
    assert swarm_inproc(home, "agent", "register", str(write_agent(tmp_path / "a", NO_NEWLINE)))
    made = swarm_inproc(home, "ticket", "create", "--title", "a", "--agent", "abrupt")
    assert made.returncode == 0, made.stderr
    ran = swarm(home, "run-ticket", "1", "--wait", timeout=120)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    sqlite_shell(  # the whole stored log one chunk, with no newline at its end
        home / "tickets.db",
        "DELETE FROM step_logs WHERE id > (SELECT min(id) FROM step_logs);"
        " UPDATE step_logs SET data = '12345'",
    )
    shown = swarm_inproc(home, "logs", "1", *(["--follow"] if follow else []))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "12345" in lines, shown.stdout  # the log's text, its line ended here
    after = lines[lines.index("12345") + 1]
    assert after.startswith("error"), shown.stdout
