"""An engine's open-file limit (RLIMIT_NOFILE) against what its `--max-vms` slots need
(docs/engine.md, "Open files"): a soft limit below it is raised to the hard limit and the
engine runs its tickets; a hard limit below it refuses the start in one line, leaving
nothing behind. Before, the engine started and failed every ticket."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.support.cli import env_for, query, swarm_inproc, wait_until

from swarm_engine.engine.fdlimit import COMMAND_FILES, hard_needed, needed
from swarm_engine.vm.hostlimits import can_raise_limits

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}
SLOTS = 4


def limited(home: Path, soft: int, hard: int, *args: str) -> subprocess.Popen[str]:
    """`swarm-engine ARGS` under `ulimit -Sn soft -Hn hard`."""

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    # a process that may raise its hard limit (CAP_SYS_RESOURCE) raises it: not here
    drop = ["setpriv", "--bounding-set=-sys_resource", "--"] if can_raise_limits() else []
    return subprocess.Popen(
        [*drop, sys.executable, "-m", "swarm_engine", *args],
        env=env_for(home, **FAST),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        preexec_fn=lower,
        start_new_session=True,
    )


def soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit in /proc/PID/limits")


def test_a_low_soft_limit_is_raised_to_the_hard_one_and_the_tickets_run(
    home: Path, tmp_path: Path
) -> None:
    """Under `ulimit -Sn 24` (the hard limit high) every step waited out a shortage that
    could not end and failed (`no file descriptors free (EMFILE)`)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < hard_needed(SLOTS, "process"):
        pytest.skip(f"this machine's hard open-file limit ({hard}) is below the need")
    write_agent(tmp_path / "say", "name: say\nkind: shell\ncommand: echo hi\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "say")).returncode == 0
    proc = limited(home, 24, hard, "start", "--foreground", "--max-vms", str(SLOTS))
    try:
        wait_until(lambda: (home / "run" / f"engine-{proc.pid}.ready").exists(), 60, "start-up")
        assert soft_limit(proc.pid) >= needed(SLOTS)  # raised (to the hard limit)
        if hard != resource.RLIM_INFINITY:
            assert soft_limit(proc.pid) == hard
        for i in range(2 * SLOTS):
            made = swarm_inproc(home, "ticket", "create", "--title", f"t{i}", "--agent", "say")
            assert made.returncode == 0, made.stderr
        sql = "SELECT count(*) AS n FROM tickets WHERE status IN ('done', 'failed')"
        wait_until(lambda: query(home / "tickets.db", sql)[0]["n"] == 2 * SLOTS, 120, "tickets")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    tickets = query(home / "tickets.db", "SELECT status, error FROM tickets")
    assert [t["status"] for t in tickets] == ["done"] * 2 * SLOTS, tickets
    assert "EMFILE" not in err and "yet:" not in err, err  # no shortage was met
    assert out.splitlines()[-1] == f"engine stopped after running {2 * SLOTS} ticket(s)"


def nothing_left(home: Path) -> None:
    assert query(home / "tickets.db", "SELECT id FROM engines") == []  # never registered
    run = home / "run"
    assert not run.exists() or sorted(p.name for p in run.iterdir()) == []  # no pid file
    assert not (home / "logs").exists()  # a daemonized start got no further either


@pytest.mark.parametrize("foreground", [True, False])
def test_a_hard_limit_below_the_need_refuses_the_start_leaving_nothing(
    home: Path, foreground: bool
) -> None:
    """(QEMU: the slots' need alone; its image is not looked at before.)"""
    hard = needed(SLOTS) - 1
    args = ["start", "--max-vms", str(SLOTS), "--backend", "qemu"]
    proc = limited(home, 24, hard, *args, *(["--foreground"] if foreground else []))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 7, (out, err)
    assert out == "", out  # not even `engine starting`
    assert err == (
        f"error: the open-file limit is too low for --max-vms {SLOTS}: an engine needs"
        f" {needed(SLOTS)} open files (48 + 8 per VM) and its hard limit (ulimit -Hn) is"
        f" {hard}: raise it before 'swarm-engine start' (ulimit -Hn {needed(SLOTS)} as root,"
        f" LimitNOFILE={needed(SLOTS)} in a systemd unit, nofile in"
        f" /etc/security/limits.conf), or lower --max-vms to {SLOTS - 1}\n"
    ), err
    nothing_left(home)


@pytest.mark.parametrize("foreground", [True, False])
def test_a_hard_limit_below_what_each_sandboxed_command_gets_refuses_the_start(
    home: Path, foreground: bool
) -> None:
    """The process sandbox gives each command 1024 open files (`prlimit`), which a
    sandbox cannot raise past the engine's hard limit: under `ulimit -n 200` the engine
    started and failed every step (`process sandbox refused: each command may have 1024
    open files, above this engine's hard limit of 200 ...`)."""
    args = ["start", "--max-vms", "2", *(["--foreground"] if foreground else [])]
    proc = limited(home, 200, 200, *args)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 7, (out, err)
    assert err == (
        "error: the open-file limit is too low for the process sandbox: each command is"
        f" given {COMMAND_FILES} open files, above this engine's hard limit (ulimit -Hn) of"
        f" 200: raise it before 'swarm-engine start' (ulimit -Hn {COMMAND_FILES} as root,"
        f" LimitNOFILE={COMMAND_FILES} in a systemd unit, nofile in"
        " /etc/security/limits.conf), or use --backend qemu\n"
    ), err
    nothing_left(home)


def test_a_hard_limit_too_low_for_one_vm_says_so_without_a_max_vms_to_lower_to(
    home: Path,
) -> None:
    proc = limited(home, 24, 40, "start", "--foreground", "--max-vms", "1", "--backend", "qemu")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 7, err
    assert err.startswith("error: the open-file limit is too low for --max-vms 1:"), err
    assert "hard limit (ulimit -Hn) is 40" in err and "lower --max-vms" not in err, err
    assert len(err.splitlines()) == 1, err
