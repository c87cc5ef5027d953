"""What an engine's stop says of how it ended: its last line counts the tickets it
aborted apart from those it ran, and `stop` relays that line and the engine's exit code,
claiming nothing the engine could not record (docs/engine.md, "Stopping")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.acceptance.conftest import engine_ready, status_of, write_agent
from tests.support.cli import (
    env_for,
    query,
    start_engine,
    swarm,
    swarm_inproc,
    wait_until,
    write_lock,
)

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}
LEASE = 6.0


def register(home: Path, tmp_path: Path, name: str, command: str) -> None:
    write_agent(tmp_path / name, f"name: {name}\nkind: shell\ncommand: {command}\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / name)).returncode == 0


def ticket(home: Path, agent: str) -> None:
    made = swarm_inproc(home, "ticket", "create", "--title", agent, "--agent", agent)
    assert made.returncode == 0, made.stderr


def engine_with_a_long_step(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> subprocess.Popen[str]:
    """An engine running one ticket whose step sleeps on (5 minutes)."""
    register(home, tmp_path, "long", "sleep 300")
    ticket(home, "long")
    proc = start_engine(home, **FAST)
    engines.append(proc)
    engine_ready(home, proc)
    wait_until(lambda: running_steps(home / "tickets.db") == 1, 60, "the step to run")
    return proc


def stop_in_background(home: Path) -> subprocess.Popen[str]:
    """`swarm-engine stop` (waiting for the engines), as a process of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", "stop", "--timeout", "60"],
        env=env_for(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def running_steps(db: Path) -> int:
    sql = "SELECT count(*) AS n FROM step_executions WHERE status = 'running'"
    return int(query(db, sql)[0]["n"])


def test_stop_now_counts_the_aborted_tickets_apart_from_those_run(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """One ticket runs to its end, two long ones are aborted by `stop --now`: the engine
    said `engine stopped after running 3 ticket(s)`."""
    db = home / "tickets.db"
    register(home, tmp_path, "quick", "echo hi")
    register(home, tmp_path, "long", "sleep 300")
    ticket(home, "quick")
    ticket(home, "long")
    ticket(home, "long")
    proc = start_engine(home, "--max-vms", "3", **FAST)
    engines.append(proc)
    engine_ready(home, proc)
    wait_until(lambda: status_of(home, 1) == "done", 60, "the quick ticket to be done")
    wait_until(lambda: running_steps(db) == 2, 60, "the long steps to run")

    stopped = swarm_inproc(home, "stop", "--now", "--timeout", "60")
    assert stopped.returncode == 0, stopped.stderr
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    said = "engine stopped after running 1 ticket(s) and aborting 2"
    assert out.splitlines()[-1] == said, out
    assert stopped.stdout.splitlines()[-2:] == [said, "stopped"], stopped.stdout  # relayed
    # its marks removed; its end kept for any other `stop` waiting for it (pruned later)
    assert [p.name for p in (home / "run").iterdir()] == [f"engine-{proc.pid}.ended"]
    assert [status_of(home, t) for t in (1, 2, 3)] == ["done", "open", "open"]


def test_an_engine_that_aborted_nothing_says_only_what_it_ran(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    register(home, tmp_path, "quick", "echo hi")
    ticket(home, "quick")
    ticket(home, "quick")
    proc = start_engine(home, "--max-vms", "2", "--until-idle", **FAST)
    engines.append(proc)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert out.splitlines()[-1] == "engine stopped after running 2 ticket(s)", out


@pytest.mark.parametrize("now", [True, False])
def test_stop_of_an_engine_whose_store_stays_locked_relays_its_line_and_exit_6(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]], now: bool
) -> None:
    """Another client holds the write lock (`BEGIN IMMEDIATE`) through the stop: the
    engine gives the store up after a lease and exits 6 naming the tickets left leased.
    `stop --now` printed `aborting ... (their runs are recorded failed ...)`, then
    `stopped`, exit 0, though nothing could be recorded."""
    db = home / "tickets.db"
    register(home, tmp_path, "long", "sleep 300")
    ticket(home, "long")
    ticket(home, "long")
    proc = start_engine(home, "--max-vms", "2", **FAST, SWARM_LEASE_TTL=f"{LEASE:g}")
    engines.append(proc)
    engine_ready(home, proc)
    wait_until(lambda: running_steps(db) == 2, 60, "the long steps to run")
    with write_lock(db):
        stopped = swarm(home, "stop", *(["--now"] if now else []), "--timeout", "120")
        assert proc.wait(timeout=5) == 6  # (gone before `stop` ended)
        assert [status_of(home, t) for t in (1, 2)] == ["running", "running"]  # nothing written
    out, _ = proc.communicate(timeout=60)
    (line,) = [x for x in out.splitlines() if x.startswith("error:")]
    assert line.startswith("error: engine stopped after running 0 ticket(s) and aborting 2,")
    assert "ticket(s) 1, 2 left leased to it" in line, line

    assert stopped.returncode == 6, (stopped.stdout, stopped.stderr)
    assert stopped.stderr.splitlines() == [line], stopped.stderr  # the engine's own line
    assert "stopped" not in stopped.stdout.splitlines(), stopped.stdout
    assert "recorded failed" not in stopped.stdout and "re-queued" not in stopped.stdout
    assert "Traceback" not in stopped.stderr + out


def test_stop_says_when_it_cannot_know_how_an_engine_ended(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """An engine killed (`kill -9`) while `stop` waits for its drain leaves no end: `stop`
    says it cannot know how it ended, and (the process gone) exits 0."""
    proc = engine_with_a_long_step(home, tmp_path, engines)
    stop = stop_in_background(home)
    marked = home / "run" / f"engine-{proc.pid}.stopping"
    wait_until(marked.exists, 30, "stop to signal the engine")  # draining: the step sleeps on
    os.killpg(proc.pid, signal.SIGKILL)  # (its sandbox with it)
    proc.communicate(timeout=30)
    out, err = stop.communicate(timeout=60)
    assert stop.returncode == 0, err
    assert f"engine (pid {proc.pid}) has exited; how it ended is not known here" in out, out
    assert out.splitlines()[-1] == "stopped", out


def test_a_second_stop_and_the_first_both_relay_how_the_engine_ended(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """A `stop` waits for a draining engine; a second `stop` aborts it (a user pressing it
    twice): both relay the engine's own line and `stopped`. Before, the first to read the
    engine's end removed it, and the other said the end was not known."""
    proc = engine_with_a_long_step(home, tmp_path, engines)
    first = stop_in_background(home)
    marked = home / "run" / f"engine-{proc.pid}.stopping"
    wait_until(marked.exists, 30, "the first stop to signal the engine")  # it waits now
    second = stop_in_background(home)
    said = [first.communicate(timeout=90), second.communicate(timeout=90)]
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    line = "engine stopped after running 0 ticket(s) and aborting 1"
    assert out.splitlines()[-1] == line, out
    for stopped, (stdout, stderr) in zip((first, second), said, strict=True):
        assert stopped.returncode == 0, stderr
        assert stdout.splitlines()[-2:] == [line, "stopped"], stdout
    assert status_of(home, 1) == "open"  # re-queued by the abort
