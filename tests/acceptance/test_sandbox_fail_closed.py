"""Fail closed: without bubblewrap a step is refused, and runs unisolated only when the host
says `isolation = "none"`, which the VM's row, `status` and `ticket show` then show.

bubblewrap is made unavailable the way a host without it looks: it is not on the PATH.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import query, swarm


def no_bwrap_path(tmp_path: Path) -> str:
    empty = tmp_path / "bin-without-bwrap"
    empty.mkdir(exist_ok=True)
    return str(empty)


def test_without_bubblewrap_a_step_is_refused_unless_isolation_none(
    home: Path, tmp_path: Path
) -> None:
    path = no_bwrap_path(tmp_path)
    swarm(home, "ticket", "create", "--title", "t", "--agent", "shell",
          "--input", "command=cat /etc/hostname; echo ran", check=True)  # fmt: skip
    done = swarm(home, "run-ticket", "1", "--wait", PATH=path)
    assert done.returncode == 1, done.stderr
    step = query(home / "tickets.db", "SELECT * FROM step_executions")[0]
    assert step["status"] == "failed"
    assert step["error"].startswith("process sandbox refused: bubblewrap (bwrap) is not installed;")
    assert 'isolation = "none"' in step["error"] and "\n" not in step["error"]
    assert query(home / "tickets.db", "SELECT count(*) n FROM vms WHERE isolation IS NOT NULL") == [
        {"n": 0}
    ]  # no VM ever ran a command
    doctor = swarm(home, "vm", "doctor", "--json", PATH=path)
    assert doctor.returncode == 7, doctor.stderr  # the default backend cannot run steps
    assert doctor.stderr.startswith("error: the process backend cannot run steps here")
    check = next(c for c in json.loads(doctor.stdout) if c["name"] == "process backend")
    assert check["level"] == "fail" and "apt-get install bubblewrap" in check["message"]

    (home / "config.toml").write_text('[backend_options.process]\nisolation = "none"\n')
    swarm(home, "ticket", "create", "--title", "t2", "--agent", "shell",
          "--input", "command=echo ran", check=True)  # fmt: skip
    done = swarm(home, "run-ticket", "2", "--wait", "--json", PATH=path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"]["stdout"] == "ran\n"
    vm = query(home / "tickets.db", "SELECT v.* FROM vms v JOIN step_executions s ON s.vm_id = v.id"
               " JOIN workflow_runs r ON r.id = s.run_id WHERE r.ticket_id = 2")[0]  # fmt: skip
    assert vm["isolation"] == "none" and vm["backend"] == "process"
    status = swarm(home, "status", check=True, COLUMNS="80")
    assert 'ran steps unisolated (isolation = "none")' in status.stdout
    assert max(len(line) for line in status.stdout.splitlines()) <= 80
    show = swarm(home, "ticket", "show", "2", check=True, COLUMNS="80")
    assert 'step(s) main ran unisolated (isolation = "none")' in show.stdout
    shown = json.loads(swarm(home, "ticket", "show", "2", "--json", check=True).stdout)
    assert shown["runs"][0]["steps"][0]["vm_isolation"] == "none"


def test_with_bubblewrap_the_vm_row_says_bwrap(home: Path) -> None:
    swarm(home, "ticket", "create", "--title", "t", "--agent", "echo", check=True)
    assert swarm(home, "run-ticket", "1", "--wait").returncode == 0
    assert query(home / "tickets.db", "SELECT isolation FROM vms") == [{"isolation": "bwrap"}]
    show = swarm(home, "ticket", "show", "1", check=True)
    assert "unisolated" not in show.stdout
