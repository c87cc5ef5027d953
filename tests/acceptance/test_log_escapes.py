"""`logs` and `logs --follow` print what steps wrote, which any code in a sandbox (or any
SQLite client) chose: escape sequences (an OSC 52 clipboard write, clear screen) and other
control characters are shown as `\\xNN`, to a terminal and a pipe alike; newlines and tabs
are kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.support.cli import swarm_inproc

OSC52 = "\x1b]52;c;ZWNobyBwd25lZA==\x07"
CLEAR = "\x1b[2J\x1b[H"


def write_log(home: Path) -> None:
    conn = sqlite3.connect(home / "tickets.db")
    with conn:
        conn.executescript(
            "INSERT INTO tickets (id, title, status, agent_id, error)"
            " VALUES (100, 't', 'failed', 'echo', 'no');"
            "INSERT INTO workflow_runs (id, ticket_id, attempt, attempt_id, execution_mode, status)"
            " VALUES (1, 100, 1, 'a1', 'single', 'failed');"
        )
        conn.execute(
            "INSERT INTO step_executions (id, run_id, step_id, agent_name, agent_version,"
            " agent_kind, status, error) VALUES (1, 1, 'main', 'echo', '1', 'echo', 'failed', ?)",
            (f"bad{CLEAR}end",),
        )
        for data in (f"one\tcol\n{OSC52}two\n", f"{CLEAR}three\rfour\x08\n"):
            conn.execute("INSERT INTO step_logs (step_execution_id, data) VALUES (1, ?)", (data,))
    conn.close()


def test_logs_show_control_characters_as_escapes(home: Path) -> None:
    write_log(home)
    for args in (("logs", "100"), ("logs", "100", "--follow")):
        done = swarm_inproc(home, *args)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert "\x1b" not in out and "\x07" not in out and "\r" not in out and "\x08" not in out
        assert "one\tcol\n\\x1b]52;c;ZWNobyBwd25lZA==\\x07two\n" in out
        assert "\\x1b[2J\\x1b[Hthree\\x0dfour\\x08\n" in out
        assert "bad\\x1b[2J\\x1b[Hend" in out


def test_a_step_error_is_one_line_and_a_blank_error_says_so(home: Path) -> None:
    """A step error another client wrote over several lines is shown on one line by
    `logs` (its newlines as `\\x0a`, as `ticket show` shows it), and one of blank lines as
    `(no error text)`; a failed ticket whose error is only whitespace shows
    `(no error text)` in `ticket list`, not an empty column (h-130 report, 10)."""
    write_log(home)
    conn = sqlite3.connect(home / "tickets.db")
    with conn:
        conn.execute("UPDATE step_executions SET error = ? WHERE id = 1", ("s1\ns2\x1b[31m red",))
        conn.execute("UPDATE tickets SET error = ? WHERE id = 100", ("\r\n\t",))
    conn.close()
    for args in (("logs", "100"), ("logs", "100", "--follow")):
        done = swarm_inproc(home, *args)
        assert done.returncode == 0, done.stderr
        (line,) = [x for x in done.stdout.splitlines() if "s1" in x or "s2" in x]
        assert line.endswith(": s1\\x0as2\\x1b[31m red"), done.stdout
    conn = sqlite3.connect(home / "tickets.db")
    with conn:
        conn.execute("UPDATE step_executions SET error = ? WHERE id = 1", ("\n\n   \n",))
    conn.close()
    done = swarm_inproc(home, "logs", "100")
    assert done.returncode == 0, done.stderr
    assert "error: (no error text)" in done.stdout.splitlines(), done.stdout
    assert not [x for x in done.stdout.splitlines() if not x.strip()], done.stdout
    listed = swarm_inproc(home, "ticket", "list")
    assert listed.returncode == 0, listed.stderr
    (row,) = [x for x in listed.stdout.splitlines() if x.lstrip().startswith("100")]
    assert "(no error text)" in row, listed.stdout
