"""The engine's own `engines` row deleted by another writer while it runs, on each store.

The engine puts its row back (same id) as soon as it sees it gone: its heartbeat touches
no row, or a write that names it (a run's start) is refused by the foreign key; such a
refused start is made again once the row is back. Before, every ticket failed with `the
run's start could not be recorded: the store refused it (FOREIGN KEY constraint
failed)` and `status` said `engines: none running` while the engine went on claiming."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.acceptance.conftest import stop
from tests.conftest import Target
from tests.support.cli import start_engine, swarm_inproc, wait_until


class Home:
    def __init__(self, target: Target, path: Path) -> None:
        self.target, self.path = target, path
        assert self.cli("status", "--init").returncode == 0
        self.procs: list[subprocess.Popen[str]] = []

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return swarm_inproc(self.path, *args, **self.target.env)

    def start(self, **env: str) -> subprocess.Popen[str]:
        proc = start_engine(self.path, "--max-vms", "2", **self.target.env, **env)
        self.procs.append(proc)
        return proc

    def engines(self) -> list[dict[str, Any]]:
        return self.target.rows("SELECT id, pid, state FROM engines")

    def registered(self, proc: subprocess.Popen[str]) -> str:
        def one() -> list[dict[str, Any]]:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            return [e for e in self.engines() if e["pid"] == proc.pid]

        return str(wait_until(one, 30, "the engine's row")[0]["id"])


@pytest.fixture
def home(store_target: Target, tmp_path: Path) -> Iterator[Home]:
    h = Home(store_target, tmp_path / "home")
    yield h
    for proc in h.procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def finish(home: Home, proc: subprocess.Popen[str]) -> str:
    assert proc.poll() is None
    out = stop(proc)
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert out.count("its row in engines was deleted by another writer; put back") == 1, out
    return out


def test_tickets_run_and_the_row_comes_back_when_a_run_start_finds_it_gone(home: Home) -> None:
    """A heartbeat far off: the first run's start is what finds the row gone."""
    proc = home.start(SWARM_HEARTBEAT_INTERVAL="60", SWARM_LEASE_TTL="180")
    engine = home.registered(proc)
    home.target.sql("DELETE FROM engines")
    values = ",".join(f"('e{i}', 'open', 'echo', '{{\"i\": {i}}}')" for i in range(5))
    home.target.sql(f"INSERT INTO tickets (title, status, agent_id, inputs) VALUES {values}")

    def ended() -> list[dict[str, Any]]:
        rows = home.target.rows("SELECT status, attempts, error FROM tickets")
        over = all(r["status"] in ("done", "failed") for r in rows)
        return rows if over or proc.poll() is not None else []

    rows = wait_until(ended, 60, "the tickets to end")
    assert rows == [{"status": "done", "attempts": 1, "error": None}] * 5, rows
    assert home.engines() == [{"id": engine, "pid": proc.pid, "state": "running"}]
    status = home.cli("status")
    assert "none running" not in status.stdout and engine[:12] in status.stdout, status.stdout
    finish(home, proc)


def test_an_idle_engines_heartbeat_puts_its_row_back(home: Home) -> None:
    proc = home.start(SWARM_HEARTBEAT_INTERVAL="0.3")
    engine = home.registered(proc)
    home.target.sql("DELETE FROM engines")
    wait_until(home.engines, 30, "the row to come back")
    assert home.engines() == [{"id": engine, "pid": proc.pid, "state": "running"}]
    home.target.sql("INSERT INTO tickets (title, status, agent_id) VALUES ('t', 'open', 'echo')")
    wait_until(
        lambda: home.target.rows("SELECT 1 FROM tickets WHERE status = 'done'"), 30, "the ticket"
    )
    finish(home, proc)


DROP_ROW = {
    "sqlite": "CREATE TRIGGER keep_out BEFORE INSERT ON engines BEGIN SELECT RAISE(IGNORE); END;",
    "postgresql": (
        "CREATE FUNCTION keep_out() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " RETURN NULL; END $$; CREATE TRIGGER keep_out BEFORE INSERT ON engines"
        " FOR EACH ROW EXECUTE FUNCTION keep_out();"
    ),
}
"""Silently drops every insert into `engines`: a deleted row cannot be put back."""


def test_tickets_claimed_while_the_row_cannot_come_back_are_left_for_another_engine(
    home: Home,
) -> None:
    """The row deleted and its insert dropped (a trigger's IGNORE): the engine stops at
    once with one line, and the tickets it claimed meanwhile, which never ran, go back to
    the queue, their attempts not counted. Before, each failed with `the run's start could
    not be recorded: the store refused it (FOREIGN KEY constraint failed)`, and the engine
    went on claiming until its next heartbeat stopped it."""
    proc = home.start(SWARM_HEARTBEAT_INTERVAL="30", SWARM_LEASE_TTL="90")
    engine = home.registered(proc)
    wait_until(  # its first heartbeat, right after its start, is over: the next is far off
        lambda: home.target.rows(
            "SELECT 1 FROM engines WHERE id = %(id)s AND heartbeat_at <> started_at", id=engine
        ),
        30,
        "the engine's first heartbeat",
    )
    home.target.sql("DELETE FROM engines")
    home.target.sql(DROP_ROW[home.target.dialect])
    values = ",".join(f"('e{i}', 'open', 'echo', '{{\"i\": {i}}}')" for i in range(2))
    home.target.sql(f"INSERT INTO tickets (title, status, agent_id, inputs) VALUES {values}")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in out, out
    errors = [x for x in out.splitlines() if x.startswith("error:")]
    assert errors == [
        "error: engine stopped: its row in engines was deleted by another writer and the"
        " store refused to put it back (engine " + errors[0].split("(engine ", 1)[-1]
    ], out
    requeued = [x for x in out.splitlines() if "re-queued for another engine" in x]
    rows = home.target.rows("SELECT status, attempts, error, attempt_id FROM tickets")
    assert len(requeued) == len(rows) == 2, out
    assert rows == [{"status": "open", "attempts": 0, "error": None, "attempt_id": None}] * 2
    assert not home.target.rows("SELECT 1 FROM workflow_runs")
    # another engine (the trigger gone) runs them, once each
    home.target.sql(
        "DROP TRIGGER keep_out" + ("" if home.target.dialect == "sqlite" else " ON engines")
    )
    done = home.cli("start", "--foreground", "--until-idle")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = home.target.rows("SELECT status, attempts FROM tickets")
    assert rows == [{"status": "done", "attempts": 1}] * 2, rows
