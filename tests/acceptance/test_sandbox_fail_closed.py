"""Fail closed: without bubblewrap a step is refused, and runs unisolated only when the host
says `isolation = "none"`, which the VM's row, `status` and `ticket show` then show.

bubblewrap is made unavailable the way a host without it looks: it is not on the PATH.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.cli import env_for, query, swarm

from swarm_engine.vm.hostlimits import can_raise_limits
from swarm_engine.vm.process import bwrap_works


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


PROBE_UNDER_A_LOW_FD_LIMIT = """
import os, resource, sys, tempfile
from pathlib import Path
from swarm_engine.errors import VMError
from swarm_engine.vm.process import ProcessBackend, ProcessConfig

backend = ProcessBackend(Path(tempfile.mkdtemp()), ProcessConfig())
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 1, hard))
try:
    backend.isolated
except VMError as exc:
    print("refused:", exc)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print("then:", backend.isolated)
"""


def test_a_sandbox_check_the_engine_cannot_run_now_is_not_a_verdict() -> None:
    """Out of file descriptors, the engine cannot even start bubblewrap's check: that is
    said as such (not "bubblewrap does not run", whose fix would be `isolation = "none"`),
    and the check runs again once descriptors are back, instead of refusing every step
    until a restart."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE_UNDER_A_LOW_FD_LIMIT],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert lines[0].startswith("refused: cannot check the process sandbox now:"), done.stdout
    assert "isolation" not in lines[0] and "raise ulimit -n" in lines[0]
    assert lines[1] == "then: True", done.stdout


@pytest.mark.parametrize("isolation", ["bwrap", "none"])
def test_an_engine_whose_hard_fd_limit_is_below_the_sandboxes_refuses_with_the_fix(
    home: Path, isolation: str
) -> None:
    """Under `ulimit -n 40`, the sandbox cannot give a command its 1024 open files (a
    user namespace cannot raise a hard limit, nor can an engine without CAP_SYS_RESOURCE,
    root in a container included): each step is refused with one line saying what to
    raise, not `prlimit: failed to set the NOFILE resource limit`."""
    if isolation == "bwrap" and not bwrap_works():
        pytest.skip("bubblewrap does not work on this host")
    (home / "config.toml").write_text(f'[backend_options.process]\nisolation = "{isolation}"\n')
    swarm(home, "ticket", "create", "--title", "t", "--agent", "echo", check=True)
    done = subprocess.run(
        ["bash", "-c", 'ulimit -n 40 && exec "$0" -m swarm_engine run-ticket 1 --wait',
         sys.executable],
        env=env_for(home), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    (ticket,) = query(home / "tickets.db", "SELECT status, error FROM tickets")
    if isolation == "none" and can_raise_limits():  # prlimit raises it: the step runs
        assert done.returncode == 0 and ticket["status"] == "done", ticket
        return
    assert done.returncode != 0
    assert ticket["status"] == "failed"
    assert ticket["error"] == (
        "step 'main' failed: process sandbox refused: each command may have 1024 open files,"
        " above this engine's hard limit of 40 (ulimit -Hn): start the engine with"
        " ulimit -Hn 1024 or more"
    )


def test_run_ticket_wait_refuses_a_backend_that_cannot_boot_before_its_claim(
    home: Path, tmp_path: Path
) -> None:
    """An agent whose steps run on QEMU while the image is not built: `run-ticket --wait`
    claimed the ticket, failed it at its first boot and exited 1 with the error twice. The
    backends its steps name are made ready first: one line, exit 7 (a VM backend
    failed), and the ticket as it was (no claim, no attempt, no run)."""
    agent = tmp_path / "in-vm"
    agent.mkdir()
    (agent / "agent.yaml").write_text(
        "name: in-vm\nversion: 1.0.0\nkind: shell\ncommand: echo hi\nvm: {backend: qemu}\n"
    )
    images = tmp_path / "no-images"
    images.mkdir()
    swarm(home, "agent", "register", str(agent), check=True)
    swarm(home, "ticket", "create", "--title", "t", "--agent", "in-vm", check=True)
    done = swarm(
        home, "run-ticket", "1", "--wait", SWARM_QEMU_IMAGES=str(images), SWARM_QEMU_IMAGE="cloud"
    )
    assert done.returncode == 7, (done.stdout, done.stderr)
    assert done.stderr.strip().splitlines() == [
        f"error: qemu image 'cloud' is not built (looked in {images / 'cloud'});"
        " run: swarm-engine vm image build"
    ], done.stderr
    (ticket,) = query(home / "tickets.db", "SELECT status, attempts FROM tickets")
    assert ticket == {"status": "open", "attempts": 0}
    assert query(home / "tickets.db", "SELECT count(*) n FROM workflow_runs") == [{"n": 0}]


def test_run_ticket_wait_refuses_a_default_backend_that_cannot_boot_before_its_claim(
    home: Path, tmp_path: Path
) -> None:
    """The same when the backend is the run's default (`--backend qemu`), not the agent's:
    the default backend was not checked before the claim."""
    images = tmp_path / "no-images"
    images.mkdir()
    swarm(home, "ticket", "create", "--title", "t", "--agent", "echo", check=True)
    done = swarm(
        home, "run-ticket", "1", "--wait", "--backend", "qemu",
        SWARM_QEMU_IMAGES=str(images), SWARM_QEMU_IMAGE="cloud",
    )  # fmt: skip
    assert done.returncode == 7, (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "qemu image 'cloud' is not built" in done.stderr
    (ticket,) = query(home / "tickets.db", "SELECT status, attempts FROM tickets")
    assert ticket == {"status": "open", "attempts": 0}
