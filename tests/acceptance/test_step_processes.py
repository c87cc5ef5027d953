"""Processes a step leaves behind, seen through the CLI (issue 8, item 7).

With bubblewrap and without it (`isolation = "none"`): a step whose command starts a
background job and exits is done with the command's own exit code, not timed out because
the job holds its stdout; and when `run-ticket --wait` returns, nothing the step started is
still running, not even a `setsid` + `env -i` descendant that dropped the VM's tag.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.support.cli import query, swarm

from swarm_engine.vm.process import bwrap_works

JOBS = {
    "nohup": "nohup sh -c 'sleep 300; true {tag}' & echo started",
    "setsid-env-i": "setsid env -i /bin/sh -c 'sleep 300; true {tag}' </dev/null >/dev/null 2>&1"
    " & echo started",
    "double-fork": "(setsid sh -c 'sleep 300; true {tag}' &); echo started",
}


def survivors(tag: str) -> list[str]:
    done = subprocess.run(["pgrep", "-af", tag], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()


@pytest.fixture(params=["none", "bwrap"])
def isolated_home(request: pytest.FixtureRequest, home: Path, tmp_path: Path) -> Path:
    if request.param == "bwrap" and not bwrap_works():
        pytest.skip("bubblewrap does not work on this host")
    (home / "config.toml").write_text(f'[backend_options.process]\nisolation = "{request.param}"\n')
    write_agent(
        tmp_path / "bg",
        """\
        name: bg
        version: 1.0.0
        kind: shell
        command: sh -c ${inputs.cmd}   # the input is a script: run it as one, explicitly
        timeout_seconds: 5
        """,
    )
    swarm(home, "agent", "register", str(tmp_path / "bg"), check=True)
    return home


@pytest.mark.parametrize("job", sorted(JOBS))
def test_a_step_ends_with_its_command_and_leaves_nothing_running(
    isolated_home: Path, job: str
) -> None:
    tag = f"swarm-leftover-{uuid.uuid4().hex}"
    cmd = JOBS[job].format(tag=tag)
    swarm(isolated_home, "ticket", "create", "--title", job, "--agent", "bg",
          "--inputs-json", json.dumps({"cmd": cmd}), check=True)  # fmt: skip
    done = swarm(isolated_home, "run-ticket", "1", "--wait", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    final = json.loads(done.stdout)
    assert final["status"] == "done"  # not "timed out after 5s"
    assert final["result"]["stdout"] == "started\n"
    step = query(isolated_home / "tickets.db", "SELECT exit_code, error FROM step_executions")[0]
    assert step == {"exit_code": 0, "error": None}
    assert survivors(tag) == []


def test_the_step_reports_its_commands_own_exit_code(isolated_home: Path) -> None:
    tag = f"swarm-leftover-{uuid.uuid4().hex}"
    cmd = f"nohup sh -c 'sleep 300; true {tag}' & echo bye; exit 3"
    swarm(isolated_home, "ticket", "create", "--title", "exit", "--agent", "bg",
          "--inputs-json", json.dumps({"cmd": cmd}), check=True)  # fmt: skip
    done = swarm(isolated_home, "run-ticket", "1", "--wait")
    assert done.returncode == 1
    ticket = query(isolated_home / "tickets.db", "SELECT status, error FROM tickets")[0]
    assert ticket["status"] == "failed"
    assert ticket["error"].startswith("step 'main' failed: command exited with 3")
    assert survivors(tag) == []
