"""A workflow run that fails has a row for every one of its steps: a step that a sibling's
failure stopped before its own row was written (its inputs still being checked against
its agent's schema) is recorded `skipped`, as the steps that never started are (tester
h-197: 87 of a 100-step fan-out had no row at all)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.acceptance.conftest import write_agent, write_workflow
from tests.support.cli import query, swarm

CHECKED = (
    "name: checked\nkind: shell\ncommand: echo ok\ninputs:\n  type: object\n"
    "  properties:\n    code: {type: string, pattern: '^(a+)+$'}\n"
)
"""An agent whose schema takes seconds to check `a...a!` (it backtracks)."""
WORKFLOW = """name: sides
version: "1"
steps:
  - id: bad
    agent: echo
    inputs: {x: "${inputs.missing}"}
  - id: slow
    agent: checked
    inputs: {code: "${inputs.code}"}
  - id: after
    agent: echo
    needs: [slow]
"""


def test_a_failed_run_has_a_row_for_every_step(home: Path, tmp_path: Path) -> None:
    made = swarm(home, "agent", "register", str(write_agent(tmp_path / "checked", CHECKED)))
    assert made.returncode == 0, made.stderr
    made = swarm(home, "workflow", "register", str(write_workflow(tmp_path / "wf", WORKFLOW)))
    assert made.returncode == 0, made.stderr
    inputs = json.dumps({"code": "a" * 34 + "!"})
    made = swarm(home, "ticket", "create", "--title", "t", "--workflow", "sides",
                 "--inputs-json", inputs)  # fmt: skip
    assert made.returncode == 0, made.stderr
    done = swarm(home, "run-ticket", "1", "--wait")
    assert done.returncode == 1, done.stdout + done.stderr
    steps = query(
        home / "tickets.db", "SELECT step_id, status, error FROM step_executions ORDER BY step_id"
    )
    by_id = {s["step_id"]: (s["status"], s["error"]) for s in steps}
    assert sorted(by_id) == ["after", "bad", "slow"] and len(steps) == 3, steps
    assert by_id["bad"][0] == "failed" and "missing" in by_id["bad"][1], steps
    assert by_id["slow"] == by_id["after"] == ("skipped", "not run: step 'bad' failed"), steps
