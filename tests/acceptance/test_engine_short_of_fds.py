"""An engine short of file descriptors while it runs (docs/sandbox.md, "A busy engine
host is a delay"): what its tickets end with, and that it makes progress.

The engine runs as a real `swarm-engine start --foreground`; once it is up, its soft
RLIMIT_NOFILE is lowered (`prlimit --pid`; the hard limit stays, as the sandbox needs),
as another program using the descriptors would: an engine started under a soft limit
below what its slots need raises it at start (tests/acceptance/test_open_file_limit.py).
Measured on the test machine: an idle engine holds about 22 descriptors (2 of them the
wake-up pair of its loop's stop-signal relay, `signals.Taken.relayed`), and a step's
command needs about 32 in all to start, so under 26 a command never starts.
"""

from __future__ import annotations

import re
import resource
import signal
from collections.abc import Callable
from pathlib import Path

from tests.acceptance.conftest import write_agent
from tests.support.cli import query, start_engine, swarm_inproc, wait_until

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}
FINISHED = ("done", "failed", "cancelled")


def run_engine_short_of_fds(home: Path, soft: int, tickets: Callable[[], int], *args: str) -> str:
    """`start --foreground ARGS`, its soft open-file limit lowered to `soft` once it is
    up, then `tickets()` made (it says how many) and run to their end; its output."""
    proc = start_engine(home, *args, **FAST)
    try:

        def up() -> bool:
            assert proc.poll() is None, proc.communicate()[0]
            return (home / "run" / f"engine-{proc.pid}.ready").exists()

        wait_until(up, 60, "the engine's start-up to end")
        hard = resource.prlimit(proc.pid, resource.RLIMIT_NOFILE)[1]
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (soft, hard))
        n = tickets()
        sql = "SELECT count(*) AS n FROM tickets WHERE status IN ('done', 'failed', 'cancelled')"
        wait_until(lambda: query(home / "tickets.db", sql)[0]["n"] == n, 300, "the tickets")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in out, out
    return out


def create(home: Path, n: int, *extra: str) -> Callable[[], int]:
    def made() -> int:
        for i in range(n):
            done = swarm_inproc(
                home, "ticket", "create", "--title", f"t{i}", "--agent", "say", *extra
            )
            assert done.returncode == 0, done.stderr
        return n

    return made


def register(home: Path, tmp_path: Path, command: str, timeout: int) -> None:
    yaml = f"name: say\nkind: shell\ncommand: {command}\ntimeout_seconds: {timeout}\n"
    write_agent(tmp_path / "say", yaml)
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "say")).returncode == 0


def test_a_ticket_timeout_that_cuts_a_shortage_wait_short_names_the_shortage(
    home: Path, tmp_path: Path
) -> None:
    register(home, tmp_path, "echo hi", timeout=120)  # the step would wait 120 s
    out = run_engine_short_of_fds(home, 26, create(home, 1, "--timeout", "2"), "--max-vms", "1")
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
    """8 slots under a soft limit of 34: the 8 steps claimed at once meet the shortage
    together. Each waiting step held its open `output.log`, so none could ever start (all
    failed at their timeout); a step waiting now holds no log descriptor, the steps start
    one after another, and every log is whole, the file the same as the live copy."""
    register(home, tmp_path, "seq 1 2000", timeout=20)
    out = run_engine_short_of_fds(home, 34, create(home, 16), "--max-vms", "8")
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


def test_a_wait_no_step_can_end_fails_without_holding_the_engine(
    home: Path, tmp_path: Path
) -> None:
    """Under a soft limit of 26 no command can start. When every running step waits for
    descriptors, none will be given back (EMFILE is the engine's own limit): each step
    failed only at its timeout, and meanwhile the daemon claimed nothing. Now it fails
    once all have waited a few seconds, with a line that says why waiting is no use."""
    register(home, tmp_path, "echo hi", timeout=600)
    out = run_engine_short_of_fds(home, 26, create(home, 3), "--max-vms", "2")
    tickets = query(home / "tickets.db", "SELECT status, error FROM tickets")
    assert [t["status"] for t in tickets] == ["failed"] * 3, (tickets, out)
    for t in tickets:
        assert re.fullmatch(
            r"step 'main' failed: cannot start command in vm-\w+: no file descriptors free"
            r" \(EMFILE\) for \d+(\.\d)?s, and every running step waits for them too:"
            r" raise ulimit -n \(now 26\) or lower --max-vms",
            t["error"],
        ), (t, out)
