"""A command that fails leaves its own failure as the step's error (exit code, stderr
tail), even when it also left a `$SWARM_OUTPUTS` file that cannot be read: that file is
at most named after the failure. A command that succeeds with a bad file still fails on
the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.support.cli import query, swarm


def run_one(home: Path, tmp_path: Path, command: str) -> dict[str, object]:
    write_agent(tmp_path / "a", f"name: a\nkind: shell\ncommand: {json.dumps(command)}\n")
    swarm(home, "agent", "register", str(tmp_path / "a"), check=True)
    swarm(home, "ticket", "create", "--title", "t", "--agent", "a", check=True)
    done = swarm(home, "run-ticket", "1", "--wait")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    step = query(home / "tickets.db", "SELECT status, exit_code, error FROM step_executions")[0]
    ticket = query(home / "tickets.db", "SELECT status, error FROM tickets")[0]
    assert step["status"] == "failed" and ticket["status"] == "failed"
    assert "\n" not in str(ticket["error"])
    return step


@pytest.mark.parametrize(
    "leftover",
    [
        """printf '{"partial":' > "$SWARM_OUTPUTS\"""",
        """printf '[1, 2]' > "$SWARM_OUTPUTS\"""",
        """printf '{"stdout": "mine"}' > "$SWARM_OUTPUTS\"""",
        """head -c 5000000 /dev/zero > "$SWARM_OUTPUTS\"""",
    ],
    ids=["not-json", "not-an-object", "engine-key", "too-big"],
)
def test_a_failed_command_keeps_its_own_failure_first(
    home: Path, tmp_path: Path, leftover: str
) -> None:
    step = run_one(home, tmp_path, f'{leftover}; echo "real failure reason" >&2; exit 7')
    error = str(step["error"])
    assert step["exit_code"] == 7
    assert error.startswith("command exited with 7: real failure reason"), error
    assert len(error) < 1000


def test_a_successful_command_with_a_bad_outputs_file_still_fails_on_it(
    home: Path, tmp_path: Path
) -> None:
    step = run_one(home, tmp_path, """printf '{"partial":' > "$SWARM_OUTPUTS"; echo ok""")
    assert str(step["error"]).startswith("$SWARM_OUTPUTS is not valid JSON"), step["error"]
