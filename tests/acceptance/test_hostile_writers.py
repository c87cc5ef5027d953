"""Faults a tester found by writing to the store and the CLI as a hostile user would:
each is now one clear line, or handled, and never a second concurrent run."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from tests.acceptance.conftest import status_of, stop, write_agent, write_workflow
from tests.support.cli import query, sqlite_shell, start_engine, swarm, swarm_inproc, wait_until

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}


def test_a_cancel_then_reopen_by_sql_never_runs_the_ticket_twice_at_once(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    write_agent(tmp_path / "long", "name: long\nkind: shell\ncommand: sleep 300\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "long")).returncode == 0
    assert swarm_inproc(home, "ticket", "create", "--title", "l", "--agent", "long").returncode == 0
    proc = start_engine(home, "--max-vms", "2", **FAST)
    engines.append(proc)
    first = wait_until(
        lambda: query(db, "SELECT * FROM step_executions WHERE status = 'running'"), 30, "step"
    )[0]
    # another writer cancels and re-queues it in one go, leaving the attempt id in place
    sqlite_shell(
        db,
        "UPDATE tickets SET status = 'cancelled' WHERE id = 1;"
        " UPDATE tickets SET status = 'open' WHERE id = 1 AND status = 'cancelled';",
    )
    second = wait_until(
        lambda: query(
            db, "SELECT * FROM step_executions WHERE status = 'running' AND id != ?", first["id"]
        ),
        30,
        "the ticket to run again",
    )[0]
    (old_vm,) = query(db, "SELECT * FROM vms WHERE id = ?", first["vm_id"])
    assert old_vm["state"] in ("destroyed", "failed")
    assert old_vm["destroyed_at"] <= second["started_at"]  # stopped before it ran again
    runs = query(db, "SELECT status, error FROM workflow_runs ORDER BY id")
    assert runs[0]["status"] == "failed" and "lost the ticket" in runs[0]["error"]
    assert runs[1]["status"] == "running"
    assert swarm_inproc(home, "ticket", "cancel", "1").returncode == 0
    wait_until(
        lambda: not query(db, "SELECT 1 FROM workflow_runs WHERE status = 'running'"),
        10,
        "no run left running",
    )
    out = stop(proc)
    assert proc.returncode == 0 and "Traceback" not in out, out


def test_a_failing_step_with_a_running_sibling_fails_the_ticket_once(
    home: Path, tmp_path: Path
) -> None:
    write_agent(tmp_path / "bad", "name: bad\nkind: shell\ncommand: echo broken >&2; exit 3\n")
    write_agent(tmp_path / "slow", "name: slow\nkind: shell\ncommand: sleep 2\n")
    for name in ("bad", "slow"):
        assert swarm_inproc(home, "agent", "register", str(tmp_path / name)).returncode == 0
    write_workflow(
        tmp_path / "wf",
        """
        name: par
        steps:
          - {id: bad, agent: bad}
          - {id: slow, agent: slow}
        """,
    )
    assert swarm_inproc(home, "workflow", "register", str(tmp_path / "wf")).returncode == 0
    assert (
        swarm_inproc(home, "ticket", "create", "--title", "p", "--workflow", "par").returncode == 0
    )
    done = swarm(home, "run-ticket", "1", "--wait")
    assert done.returncode == 1, done.stdout + done.stderr
    (ticket,) = query(home / "tickets.db", "SELECT status, error, attempts FROM tickets")
    assert ticket["status"] == "failed" and ticket["attempts"] == 1
    assert "step 'bad' failed" in ticket["error"] and "aborted" not in ticket["error"]
    steps = {
        s["step_id"]: s["status"]
        for s in query(home / "tickets.db", "SELECT * FROM step_executions")
    }
    assert steps == {"bad": "failed", "slow": "cancelled"}


@pytest.mark.parametrize(
    ("lease", "runs"),
    [("'zzz'", True), ("'2026-01-01T05:30:06+05:00'", True), ("'9999-01-01T00:00:00Z'", True),
     ("4102444800", True), ("X'00'", True), ("strftime('%s','now') - 60", True),
     ("strftime('%s','now') + 2 * 86400", False)],
)  # fmt: skip
def test_hand_written_live_rows_are_reclaimed_by_what_their_lease_says(
    home: Path, lease: str, runs: bool
) -> None:
    """A lease no engine could have written counts as expired: unreadable, or further
    ahead than the longest `lease_ttl` (7 days) and an hour (9999, 2100: such a ticket had
    stayed running for good); one two days ahead is held (a 7-day lease may be)."""
    db = home / "tickets.db"
    sqlite_shell(
        db,
        "INSERT INTO tickets (title, status, agent_id, attempt_id, engine_id, lease_expires_at)"
        f" VALUES ('x', 'running', 'echo', 'a', 'elsewhere', {lease})",
    )
    assert swarm_inproc(home, "cleanup").returncode == 0  # reclaims what has expired
    if not runs:
        assert status_of(home, 1) == "running"  # someone may hold it for two more days
        return
    assert status_of(home, 1) == "open"
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=60, **FAST)
    assert done.returncode == 0, done.stdout + done.stderr
    assert status_of(home, 1) == "done"


def test_out_of_range_numbers_are_named_not_crashes(home: Path) -> None:
    db = home / "tickets.db"
    sqlite_shell(
        db,
        "INSERT INTO tickets (title, status, agent_id, attempts) VALUES ('a', 'open', 'echo', 9223372036854775807);"
        " INSERT INTO tickets (title, status, agent_id, inputs) VALUES ('b', 'open', 'echo', '{\"a\": 1e999}');",
    )
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=60, **FAST)
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr
    rows = {r["id"]: r for r in query(db, "SELECT id, status, error FROM tickets")}
    assert rows[1]["status"] == "failed" and "attempts: out of range" in rows[1]["error"]
    assert rows[2]["status"] == "failed" and "inputs: not valid JSON" in rows[2]["error"]
    for args, code in (
        (("ticket", "show", "99999999999999999999999"), 2),
        (("ticket", "create", "--title", "t", "--agent", "echo", "--priority", "1" + "0" * 30), 2),
        (("ticket", "create", "--title", "t", "--agent", "echo", "--inputs-json", '{"a": NaN}'), 2),
        (("ticket", "create", "--title", "t", "--agent", "echo", "--timeout", "nan"), 2),
    ):
        out = swarm_inproc(home, *args)
        assert out.returncode == code, (args, out.stdout, out.stderr)
        assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr


def test_settings_that_cannot_work_are_refused_at_start(home: Path) -> None:
    for name, value in (
        ("SWARM_LEASE_TTL", "inf"),
        ("SWARM_LEASE_TTL", "1e12"),
        ("SWARM_HEARTBEAT_INTERVAL", "1e-300"),
        ("SWARM_POLL_INTERVAL", "nan"),
        ("SWARM_LOG_LEVEL", "chatty"),
    ):
        done = swarm(home, "start", "--foreground", "--until-idle", **{name: value})
        assert done.returncode == 5, (name, value, done.stdout, done.stderr)
        assert done.stderr.startswith("error: setting ") and done.stderr.count("\n") == 1


def test_terminal_escapes_in_stored_text_do_not_reach_the_terminal(home: Path) -> None:
    db = home / "tickets.db"
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO tickets (title, status, agent_id, error) VALUES (?, 'failed', 'echo', ?)",
        ("\x1b[2Jclear\x07", "line one\nforged: line two \x1b]52;c;aGk=\x07"),
    )
    conn.commit()
    conn.close()
    for args in (("ticket", "list"), ("ticket", "show", "1"), ("status",)):
        out = swarm_inproc(home, *args)
        assert out.returncode == 0
        assert "\x1b" not in out.stdout and "\x07" not in out.stdout, args
    shown = swarm_inproc(home, "ticket", "show", "1").stdout
    assert "\\x1b[2Jclear" in shown and "\nforged" not in shown


def test_a_hand_written_registry_row_with_odd_values_is_one_line(home: Path) -> None:
    conn = sqlite3.connect(home / "registry.db")
    conn.execute("INSERT INTO agents (name, version, kind, spec) VALUES ('odd', '²', 'echo', '{}')")
    conn.execute("INSERT INTO workflows (name, version, spec) VALUES ('listy', '1', '[]')")
    conn.commit()
    conn.close()
    listed = swarm_inproc(home, "workflow", "list")
    assert listed.returncode == 0 and "listy" in listed.stdout
    for args in (("agent", "show", "odd"), ("ticket", "create", "--title", "t", "--agent", "odd")):
        out = swarm_inproc(home, *args)
        assert out.returncode == 5, (args, out.stdout, out.stderr)
        assert out.stderr.startswith("error: agent odd@² in the registry"), out.stderr
    assert swarm_inproc(home, "agent", "show", "echo").returncode == 0  # others unaffected


def test_a_package_with_a_named_pipe_is_refused_in_one_line(home: Path, tmp_path: Path) -> None:
    package = write_agent(tmp_path / "piped", "name: piped\nkind: shell\ncommand: true\n")
    os.mkfifo(package / "fifo")
    out = swarm_inproc(home, "agent", "register", str(package))
    assert out.returncode == 5, out.stdout + out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
    assert not list((home / "packages").rglob("*")) if (home / "packages").exists() else True
    assert json.loads(swarm_inproc(home, "agent", "list", "--json").stdout)  # still lists
