"""What an engine's stop says of how it ended: its last line counts the tickets it
aborted apart from those it ran (docs/engine.md, "Stopping")."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.acceptance.conftest import engine_ready, status_of, write_agent
from tests.support.cli import query, start_engine, swarm_inproc, wait_until

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}


def register(home: Path, tmp_path: Path, name: str, command: str) -> None:
    write_agent(tmp_path / name, f"name: {name}\nkind: shell\ncommand: {command}\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / name)).returncode == 0


def ticket(home: Path, agent: str) -> None:
    made = swarm_inproc(home, "ticket", "create", "--title", agent, "--agent", agent)
    assert made.returncode == 0, made.stderr


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
    assert out.splitlines()[-1] == "engine stopped after running 1 ticket(s) and aborting 2", out
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
