"""The engine as users run it, on each store: SQLite and PostgreSQL, same promises.

Several engines share one store (every ticket done exactly once); a killed engine's
tickets are finished by another once its leases run out; an outside writer (the sqlite3
shell, psql) wakes an idle engine at once; odd rows such a writer can store fail alone,
each with one line naming the field, while the engine and the other tickets go on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Target
from tests.support.cli import end_engine, start_engine, swarm, swarm_inproc, wait_until

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}


class Fleet:
    """A home per store target, its engines, and reads of the store."""

    def __init__(self, target: Target, home: Path) -> None:
        self.target, self.home = target, home
        done = swarm_inproc(home, "status", "--init", **target.env)
        assert done.returncode == 0, done.stderr
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        proc = start_engine(self.home, *args, **self.target.env, **env)
        self.procs.append(proc)
        return proc

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return swarm_inproc(self.home, *args, **self.target.env)

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        return self.target.rows(sql, **params)

    def status(self, tid: int) -> str:
        return str(self.rows("SELECT status FROM tickets WHERE id = %(id)s", id=tid)[0]["status"])

    def close(self) -> None:
        for p in self.procs:
            end_engine(p)


@pytest.fixture
def fleet(store_target: Target, tmp_path: Path) -> Any:
    f = Fleet(store_target, tmp_path / "home")
    yield f
    f.close()


def register(fleet: Fleet, folder: Path, yaml_text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "agent.yaml").write_text(yaml_text)
    done = fleet.cli("agent", "register", str(folder))
    assert done.returncode == 0, done.stderr


def test_three_engines_run_every_ticket_exactly_once(fleet: Fleet) -> None:
    total = 180
    values = ",".join(f"('t{i}', 'open', 'echo', '{{\"i\": {i}}}')" for i in range(total))
    fleet.target.sql(f"INSERT INTO tickets (title, status, agent_id, inputs) VALUES {values}")
    procs = [fleet.start("--max-vms", "4", "--until-idle", "--another", **FAST) for _ in range(3)]
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    tickets = fleet.rows("SELECT id, status, result, inputs FROM tickets")
    assert Counter(t["status"] for t in tickets) == {"done": total}

    def as_json(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    assert all(as_json(t["result"]) == as_json(t["inputs"]) for t in tickets)
    done_steps = fleet.rows(
        "SELECT r.ticket_id FROM step_executions s JOIN workflow_runs r ON r.id = s.run_id"
        " WHERE s.status = 'done'"
    )
    per_ticket = Counter(s["ticket_id"] for s in done_steps)
    assert len(per_ticket) == total and set(per_ticket.values()) == {1}
    engines = {r["engine_id"] for r in fleet.rows("SELECT DISTINCT engine_id FROM vms")}
    assert len(engines) == 3, "all three engines took part"


def test_a_killed_engines_tickets_are_finished_by_another(fleet: Fleet, tmp_path: Path) -> None:
    register(fleet, tmp_path / "slow", "name: slow\nkind: shell\ncommand: sleep 1.5; echo fin\n")
    for i in range(4):
        assert fleet.cli("ticket", "create", "--title", f"s{i}", "--agent", "slow").returncode == 0
    env = dict(FAST, SWARM_LEASE_TTL="2")
    victim = fleet.start("--max-vms", "4", **env)
    wait_until(
        lambda: len(fleet.rows("SELECT 1 FROM step_executions WHERE status = 'running'")) == 4,
        30,
        "4 running steps",
    )
    os.killpg(victim.pid, signal.SIGKILL)  # the engine and everything in its process group
    victim.wait()
    rescuer = fleet.start("--max-vms", "4", "--until-idle", **env)
    out, _ = rescuer.communicate(timeout=120)
    assert rescuer.returncode == 0, out
    tickets = fleet.rows("SELECT status, attempts FROM tickets")
    assert [t["status"] for t in tickets] == ["done"] * 4
    assert {t["attempts"] for t in tickets} == {2}
    runs = fleet.rows("SELECT status, error FROM workflow_runs ORDER BY id")
    assert Counter(r["status"] for r in runs) == {"failed": 4, "done": 4}
    assert all("lease expired" in r["error"] for r in runs if r["status"] == "failed")
    assert fleet.rows("SELECT state FROM vms WHERE state NOT IN ('destroyed','failed')") == []
    dead = fleet.rows("SELECT state FROM engines WHERE pid = %(pid)s", pid=victim.pid)
    assert dead[0]["state"] == "dead"


def test_an_outside_writer_wakes_an_idle_engine_without_the_poll(fleet: Fleet) -> None:
    """The fallback poll is a minute, so only the wake-up can start these in time."""
    proc = fleet.start(
        "--max-vms", "2", SWARM_POLL_INTERVAL="60", SWARM_HEARTBEAT_INTERVAL="10",
        SWARM_LEASE_TTL="60",
    )  # fmt: skip
    wait_until(
        lambda: fleet.rows("SELECT 1 FROM engines WHERE pid = %(p)s AND state = 'running'",
                           p=proc.pid),
        30,
        "the engine to register",
    )  # fmt: skip
    for i in range(4):
        time.sleep(0.3)  # sleep-ok: the idle gap before an outside insert is the input
        fleet.target.sql(
            f"INSERT INTO tickets (title, status, agent_id) VALUES ('idle {i}', 'open', 'echo')"
        )
        wait_until(lambda i=i: fleet.status(i + 1) == "done", 20, f"ticket {i + 1}")


# Rows an outside writer can store in both databases (each enforces what it enforces:
# PostgreSQL refuses text in a number column at the writer's end; SQLite's own odd rows
# are in test_untrusted_rows.py).
ODD = [
    ("inputs that are a JSON list", "agent_id, inputs", "'echo', '[1, 2]'", "inputs"),
    ("inputs that are a JSON string", "agent_id, inputs", "'echo', '\"text\"'", "inputs"),
    ("a negative timeout", "agent_id, timeout_seconds", "'echo', -5", "timeout_seconds"),
    ("an agent nobody registered", "agent_id", "'ghost'", "unknown agent 'ghost'"),
    ("a workflow nobody registered", "execution_mode, workflow_id", "'workflow', 'nope'",
     "unknown workflow 'nope'"),
    ("the highest 64-bit priority", "agent_id, priority", "'echo', 9223372036854775807", None),
    ("the lowest 64-bit priority", "agent_id, priority", "'echo', -9223372036854775808", None),
]  # fmt: skip


def run_beside_a_good_ticket(fleet: Fleet) -> dict[str, dict[str, Any]]:
    """Add a good `echo` ticket, run the engine until idle (no traceback), check the good
    one is done, and return every ticket's `status`, `attempts` and `error` by title."""
    fleet.target.sql(
        "INSERT INTO tickets (title, status, agent_id) VALUES ('good', 'open', 'echo')"
    )
    done = swarm(fleet.home, "start", "--foreground", "--until-idle", timeout=60,
                 **fleet.target.env, **FAST)  # fmt: skip
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr, done.stderr
    rows = {r["title"]: r for r in fleet.rows("SELECT title, status, attempts, error FROM tickets")}
    assert rows["good"]["status"] == "done"
    return rows


@pytest.mark.parametrize(("what", "columns", "values", "named"), ODD, ids=[o[0] for o in ODD])
def test_an_odd_row_fails_alone_and_the_engine_goes_on(
    fleet: Fleet, what: str, columns: str, values: str, named: str | None
) -> None:
    fleet.target.sql(
        f"INSERT INTO tickets (title, status, {columns}) VALUES ('odd', 'open', {values})"
    )
    rows = run_beside_a_good_ticket(fleet)
    if named is None:  # an extreme but valid value: it simply runs
        assert rows["odd"]["status"] == "done"
    else:
        assert rows["odd"]["status"] == "failed", rows["odd"]
        assert named in rows["odd"]["error"] and "\n" not in rows["odd"]["error"]
    for args in (("ticket", "list"), ("ticket", "show", "1"), ("status",), ("status", "--json")):
        shown = fleet.cli(*args)
        assert shown.returncode == 0 and "Traceback" not in shown.stdout + shown.stderr, args
    assert fleet.rows("SELECT 1 FROM workflow_runs WHERE status = 'running'") == []


def test_a_hand_written_registry_row_fails_its_tickets_in_one_line(fleet: Fleet) -> None:
    registry = fleet.target if fleet.target.dialect == "postgresql" else None
    if registry is not None:
        registry.sql(
            "INSERT INTO agents (name, version, kind, spec) VALUES"
            ' (\'hand\', \'1\', \'shell\', \'{"name": "hand", "version": "1", "bogus": 1}\')'
        )
    else:
        from tests.support.cli import sqlite_shell

        sqlite_shell(
            fleet.home / "registry.db",
            "INSERT INTO agents (name, version, kind, spec) VALUES"
            ' (\'hand\', \'1\', \'shell\', \'{"name": "hand", "version": "1", "bogus": 1}\')',
        )
    assert fleet.cli("ticket", "create", "--title", "h", "--agent", "hand").returncode != 0
    fleet.target.sql("INSERT INTO tickets (title, status, agent_id) VALUES ('h', 'open', 'hand')")
    done = swarm(fleet.home, "start", "--foreground", "--until-idle", timeout=60,
                 **fleet.target.env, **FAST)  # fmt: skip
    assert done.returncode == 0, done.stderr
    [row] = fleet.rows("SELECT status, error FROM tickets")
    assert row["status"] == "failed" and "agent hand@1 in the registry" in row["error"]
    assert "\n" not in row["error"]


# Instants each store holds but Python's datetime cannot (before year 1, after 9999,
# infinite), and a number SQLite reads as no time at all.
UNHELD = {
    "postgresql": ["'infinity'", "'-infinity'", "'294276-12-31'", "'4713-01-01 BC'"],
    "sqlite": ["'0000-06-01'", "'-0001-01-01'", "1e300", "'infinity'"],
}


def test_a_timestamp_python_cannot_hold_fails_its_ticket_at_its_claim(fleet: Fleet) -> None:
    """A `created_at` PostgreSQL holds but Python cannot (`infinity`, year 294276, BC)
    stopped the read of the claimed row: the ticket stayed claimed with no run, failed
    leases later as "did not renew it in time", and `ticket list` failed for everyone
    while the row existed. It fails at its claim, one line naming the column; every
    command shows it."""
    values = UNHELD[fleet.target.dialect]
    for i, value in enumerate(values):
        fleet.target.sql(
            "INSERT INTO tickets (title, status, agent_id, created_at)"
            f" VALUES ('bad {i}', 'open', 'echo', {value})"
        )
    rows = run_beside_a_good_ticket(fleet)
    for i in range(len(values)):
        row = rows[f"bad {i}"]
        assert row["status"] == "failed" and row["attempts"] == 1, row
        assert "created_at: " in row["error"] and "\n" not in row["error"], row
    assert fleet.rows("SELECT 1 FROM workflow_runs WHERE status = 'running'") == []
    for args in (("ticket", "list"), ("ticket", "list", "--json"), ("ticket", "show", "1"),
                 ("ticket", "show", "1", "--json"), ("status",), ("status", "--json")):  # fmt: skip
        shown = fleet.cli(*args)
        assert shown.returncode == 0 and "Traceback" not in shown.stdout + shown.stderr, args
        assert "created_at" in shown.stdout or args[0] == "status", (args, shown.stdout)
