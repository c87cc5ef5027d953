"""An engine started under a low `ulimit -Sn` (docs/sandbox.md, "A busy engine host is a
delay"): what its tickets end with, and that it makes progress.

The engine runs as a real `swarm-engine start --foreground --until-idle` whose soft
RLIMIT_NOFILE is lowered before it starts (the hard limit stays, as the sandbox needs).
Measured on the test machine: the engine needs about 20 descriptors to start and claim,
and a step's command about 30 in all to start, so under 24 a command never starts.
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

from tests.acceptance.conftest import write_agent
from tests.support.cli import env_for, query, swarm_inproc

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}


def run_engine_short_of_fds(home: Path, soft: int, *args: str) -> str:
    """`start --foreground --until-idle ARGS` with `ulimit -Sn soft`; its output."""

    def lower() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    done = subprocess.run(
        [sys.executable, "-m", "swarm_engine", "start", "--foreground", "--until-idle", *args],
        env=env_for(home, **FAST),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        preexec_fn=lower,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in out, out
    return out


def register(home: Path, tmp_path: Path, command: str, timeout: int) -> None:
    yaml = f"name: say\nkind: shell\ncommand: {command}\ntimeout_seconds: {timeout}\n"
    write_agent(tmp_path / "say", yaml)
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "say")).returncode == 0


def test_a_ticket_timeout_that_cuts_a_shortage_wait_short_names_the_shortage(
    home: Path, tmp_path: Path
) -> None:
    register(home, tmp_path, "echo hi", timeout=120)  # the step would wait 120 s
    done = swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "say",
                        "--timeout", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = run_engine_short_of_fds(home, 24, "--max-vms", "1")
    (ticket,) = query(home / "tickets.db", "SELECT status, error FROM tickets")
    assert ticket["status"] == "failed", (ticket, out)
    assert re.fullmatch(
        r"ticket timed out after 2s while waiting on a host shortage: cannot start command"
        r" in vm-\w+: no file descriptors free \(EMFILE\) for \d+(\.\d)?s:"
        r" raise ulimit -n or lower --max-vms",
        ticket["error"],
    ), (ticket, out)


def test_many_slots_under_a_tight_fd_limit_make_progress_and_keep_every_log_line(
    home: Path, tmp_path: Path
) -> None:
    """8 slots under `ulimit -Sn 32`: the 8 steps claimed at once meet the shortage
    together. Each waiting step held its open `output.log`, so none could ever start (all
    failed at their timeout); a step waiting now holds no log descriptor, the steps start
    one after another, and every log is whole, the file the same as the live copy."""
    register(home, tmp_path, "seq 1 2000", timeout=20)
    for n in range(16):
        done = swarm_inproc(home, "ticket", "create", "--title", f"t{n}", "--agent", "say")
        assert done.returncode == 0, done.stderr
    out = run_engine_short_of_fds(home, 32, "--max-vms", "8")
    assert "trying again for up to" in out, out  # the shortage was met
    db = home / "tickets.db"
    tickets = query(db, "SELECT id, status, error FROM tickets")
    assert [t for t in tickets if t["status"] != "done"] == [], out
    expected = "".join(f"{n}\n" for n in range(1, 2001))
    for step in query(db, "SELECT id, log_path FROM step_executions"):
        live = "".join(
            r["data"]
            for r in query(
                db, "SELECT data FROM step_logs WHERE step_execution_id = ? ORDER BY id", step["id"]
            )
        )
        assert Path(step["log_path"]).read_text() == live, step
        assert live == expected, step  # the command's bytes, however its chunks fell


def test_an_engine_too_short_of_fds_to_import_fails_its_tickets_with_one_line(
    home: Path, tmp_path: Path
) -> None:
    """Under `ulimit -Sn 17` the engine can open its databases but not import an agent
    kind: importing one when a ticket is planned crashed (a traceback, `cannot resolve
    ticket 1: OSError`). The built-in kinds are imported as the engine starts, so the
    ticket gets as far as its step, which fails with a line naming the shortage."""
    register(home, tmp_path, "echo hi", timeout=2)
    done = swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "say")
    assert done.returncode == 0, done.stderr
    out = run_engine_short_of_fds(home, 17, "--max-vms", "1")
    (ticket,) = query(home / "tickets.db", "SELECT status, error FROM tickets")
    assert ticket["status"] == "failed", (ticket, out)
    assert "\n" not in ticket["error"] and "cannot resolve" not in ticket["error"], ticket
    assert re.search(r"Too many open files|EMFILE", ticket["error"]), (ticket, out)
    assert ticket["error"].startswith("step 'main' failed: "), ticket  # planned: it got there


def test_a_wait_no_step_can_end_fails_without_holding_the_engine(
    home: Path, tmp_path: Path
) -> None:
    """Under `ulimit -Sn 24` no command can start. When every running step waits for
    descriptors, none will be given back (EMFILE is the engine's own limit): each step
    failed only at its timeout, and meanwhile the daemon claimed nothing. Now it fails
    once all have waited a few seconds, with a line that says why waiting is no use."""
    register(home, tmp_path, "echo hi", timeout=600)
    for n in range(3):
        done = swarm_inproc(home, "ticket", "create", "--title", f"t{n}", "--agent", "say")
        assert done.returncode == 0, done.stderr
    out = run_engine_short_of_fds(home, 24, "--max-vms", "2")
    tickets = query(home / "tickets.db", "SELECT status, error FROM tickets")
    assert [t["status"] for t in tickets] == ["failed"] * 3, (tickets, out)
    for t in tickets:
        assert re.fullmatch(
            r"step 'main' failed: cannot start command in vm-\w+: no file descriptors free"
            r" \(EMFILE\) for \d+(\.\d)?s, and every running step waits for them too:"
            r" raise ulimit -n \(now 24\) or lower --max-vms",
            t["error"],
        ), (t, out)
