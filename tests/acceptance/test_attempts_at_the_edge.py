"""An open row whose `attempts` another client wrote at the edge of what the column holds
(the largest 64-bit integer; on SQLite a REAL or text too) fails alone, with one line
naming its attempts as written, while the tickets beside it run. The claim counts an
attempt with `attempts + 1`: on PostgreSQL that overflowed `bigint` and failed the whole
claim, so no ticket ran; on SQLite it turned the count into a REAL, and the line quoted a
value nobody wrote. Both stores, the real engine command."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from tests.conftest import Target
from tests.support.cli import swarm, swarm_inproc

TOP = 2**63 - 1
GOOD = 3

EDGES = [
    # (what, the value written, the line's part, runs recorded: a row past its attempts
    # is refused unrun; a malformed row fails at its plan, which records a run)
    ("the largest 64-bit count", str(TOP), f"attempts: out of range ({TOP})", 1),
    ("attempts spent", "3", "this would be attempt 4 of at most 3", 0),
    ("a negative count", "-5", "attempts is -5, not a count", 0),
    ("a REAL count", "1.5", "attempts: not an integer (1.5)", 1),
    ("a text count", "'many'", "attempts: not an integer ('many')", 1),
]


def run_beside(store_target: Target, tmp_path: Path, attempts: str, most: str, good: int) -> None:
    """`good` open echo tickets, then one whose attempts and max_attempts are the SQL
    `attempts` and `most` as written, run by `start --until-idle` to the end."""
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", **store_target.env).returncode == 0
    if good:
        store_target.sql(
            "INSERT INTO tickets (title, status, agent_id, inputs) VALUES"
            + ", ".join(f" ('good {i}', 'open', 'echo', '{{}}')" for i in range(good))
        )
    store_target.sql(
        "INSERT INTO tickets (title, status, agent_id, inputs, attempts, max_attempts)"
        f" VALUES ('edge', 'open', 'echo', '{{}}', {attempts}, {most})"
    )
    done = swarm(
        home, "start", "--foreground", "--until-idle", "--max-vms", "2", timeout=120,
        **store_target.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize(("what", "value", "line", "runs"), EDGES, ids=[e[0] for e in EDGES])
def test_an_attempts_value_at_the_edge_fails_its_ticket_alone(
    store_target: Target, tmp_path: Path, what: str, value: str, line: str, runs: int
) -> None:
    if store_target.dialect == "postgresql" and value in ("1.5", "'many'"):
        pytest.skip("PostgreSQL's bigint column holds integers only")
    run_beside(store_target, tmp_path, value, "3", good=GOOD)
    rows = store_target.rows("SELECT title, status, error, attempts FROM tickets ORDER BY id")
    assert [r["status"] for r in rows[:GOOD]] == ["done"] * GOOD, rows
    edge = rows[GOOD]
    assert edge["status"] == "failed", edge
    assert "\n" not in edge["error"] and line in edge["error"], edge["error"]
    written = {"1.5": 1.5, "'many'": "many"}.get(value)
    assert edge["attempts"] == (int(value) if written is None else written)  # as stored
    (recorded,) = store_target.rows("SELECT count(*) AS n FROM workflow_runs WHERE ticket_id = 4")
    assert recorded["n"] == runs


MAX_EDGES = [
    # (what, attempts, max_attempts as written, the line's part): the claim must not count
    # an attempt of a row whose max_attempts the engine will refuse
    ("max_attempts past 2^62", "0", str(TOP), f"max_attempts: out of range ({TOP})"),
    ("attempts at 2^62", str(2**62), str(2**62 + 1), f"max_attempts: out of range ({2**62 + 1})"),
    ("a REAL max_attempts", "2", "2.5", "max_attempts: not an integer (2.5)"),
    ("a text max_attempts", "0", "'many'", "max_attempts: not an integer ('many')"),
]


@pytest.mark.parametrize(("what", "attempts", "most", "line"), MAX_EDGES,
                         ids=[e[0] for e in MAX_EDGES])  # fmt: skip
def test_a_max_attempts_the_engine_refuses_leaves_attempts_as_written(
    store_target: Target, tmp_path: Path, what: str, attempts: str, most: str, line: str
) -> None:
    if store_target.dialect == "postgresql" and most in ("2.5", "'many'"):
        pytest.skip("PostgreSQL's bigint column holds integers only")
    run_beside(store_target, tmp_path, attempts, most, good=0)
    (edge,) = store_target.rows("SELECT status, error, attempts FROM tickets")
    assert edge["status"] == "failed" and line in edge["error"], edge
    assert edge["attempts"] == int(attempts)  # as written: the claim counted none


def test_run_ticket_of_a_lapsed_row_with_no_count_of_attempts_never_runs_it(
    store_target: Target, tmp_path: Path
) -> None:
    """A `running` row whose lease ran out and whose attempts are -5: its reclaim re-queues
    it, and `run-ticket` then refuses it as it refuses such an open row (it claimed it
    uncounted and ran it to `done`, attempts still -5)."""
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", **store_target.env).returncode == 0
    store_target.sql(
        "INSERT INTO tickets (title, status, agent_id, inputs, attempts, max_attempts,"
        " engine_id, attempt_id, lease_expires_at)"
        " VALUES ('lapsed', 'running', 'echo', '{}', -5, 3, 'ghost', 'x1', '2020-01-01')"
    )
    ran = swarm(home, "run-ticket", "1", "--wait", timeout=120, **store_target.env)
    assert ran.returncode == 5, ran.stdout + ran.stderr
    assert ran.stderr.count("\n") == 1 and "attempts is -5, not a count" in ran.stderr
    (row,) = store_target.rows("SELECT status, attempts FROM tickets")
    assert row["status"] != "done" and row["attempts"] == -5, row
    assert not store_target.rows("SELECT 1 FROM step_executions")  # never ran


def test_a_lapsed_row_whose_attempts_are_bytes_is_failed_with_a_readable_line(
    tmp_path: Path,
) -> None:
    """SQLite: a lapsed `claimed` row whose attempts are a BLOB (`x'00'`) is failed by the
    lease reclaim with a line that holds no byte of it (it held a NUL, which cut the line
    short in `sqlite3`)."""
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    conn = sqlite3.connect(home / "tickets.db")
    with conn:
        conn.execute(
            "INSERT INTO tickets (title, status, agent_id, inputs, attempts, max_attempts,"
            " engine_id, attempt_id, lease_expires_at)"
            " VALUES ('blob', 'claimed', 'echo', '{}', x'00', 3, 'ghost', 'x1', '2020-01-01')"
        )
    conn.close()
    done = swarm(home, "cleanup", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    conn = sqlite3.connect(home / "tickets.db")
    ((status, error, attempts),) = conn.execute("SELECT status, error, attempts FROM tickets")
    conn.close()
    assert status == "failed" and "\x00" not in error, error
    assert error.startswith("lease expired after ? attempt(s); engine ghost"), error
    assert attempts == b"\x00"  # as written
