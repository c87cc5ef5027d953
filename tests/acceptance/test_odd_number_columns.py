"""A number column of a run, step, VM, engine or ticket row holds whatever another SQLite
client wrote there (text, a blob, a fraction, a number past 64 bits, a negative one, an
infinity). The store reads such a row once, leniently (`store/rows.py`): `status` and
`ticket show` show it (exit 0, no traceback), and `ticket show --json` gives the same
values and the same `defects` as the HTTP API, which reads the row through that same
decoding."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tests.support.cli import swarm_inproc

from swarm_engine.api import models

NUMBER_COLUMNS = [
    ("workflow_runs", column)
    for column in (
        "attempt", "duration_ms", "input_tokens", "output_tokens",
        "cache_creation_input_tokens", "cache_read_input_tokens", "cost_usd",
    )
] + [
    ("step_executions", column)
    for column in (
        "retry_count", "duration_ms", "exit_code", "input_tokens", "output_tokens",
        "cache_creation_input_tokens", "cache_read_input_tokens", "turns", "cost_usd",
    )
] + [
    ("vms", column)
    for column in ("owner_pid", "pid", "step_execution_id", "memory_mb", "vcpus")
] + [
    ("engines", column) for column in ("pid", "max_vms", "busy_vms")
] + [
    ("tickets", column) for column in ("priority", "attempts", "max_attempts", "timeout_seconds")
]  # fmt: skip

ODD_VALUES = st.one_of(
    st.text(max_size=12),
    st.binary(max_size=6),
    st.floats(allow_nan=False),  # (SQLite stores a NaN as NULL)
    st.integers(min_value=-(2**70), max_value=2**70),
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home holding one done ticket with one run of one step, one live VM and one
    running engine, written as another client would."""
    home = tmp_path_factory.mktemp("odd") / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    conn = sqlite3.connect(home / "tickets.db", timeout=30, isolation_level=None)
    try:
        conn.execute("INSERT INTO tickets (title, status, agent_id) VALUES ('t', 'done', 'echo')")
        conn.execute(
            "INSERT INTO engines (id, host, pid, max_vms, backend) VALUES ('e1', 'h1', ?, 2, 'x')",
            (os.getpid(),),
        )
        conn.execute(
            "INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, execution_mode, status,"
            " duration_ms, input_tokens, output_tokens) VALUES (1, 1, 'a1', 'single', 'done',"
            " 40, 5, 7)"
        )
        conn.execute(
            "INSERT INTO step_executions (run_id, step_id, agent_name, agent_version,"
            " agent_kind, status, duration_ms, exit_code, input_tokens, output_tokens,"
            " cost_usd) VALUES (1, 'main', 'echo', '1', 'echo', 'done', 30, 0, 5, 7, 0.01)"
        )
        conn.execute(
            "INSERT INTO vms (id, backend, host, engine_id, owner_pid, pid, state,"
            " step_execution_id, memory_mb, vcpus) VALUES ('vm1', 'x', 'h1', 'e1', 1, 2,"
            " 'busy', 1, 512, 1)"
        )
    finally:
        conn.close()
    return home


def stored(value: Any) -> Any:
    """How a client would bind `value`: an integer past 64 bits can only be a REAL."""
    return float(value) if isinstance(value, int) and not -(2**63) <= value < 2**63 else value


def common(cli: dict[str, Any], api: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both records' values for the keys the CLI gives, with `defects` ([] when none)."""
    keys = [k for k in cli if k not in ("steps", "defects")]
    return (
        {k: cli[k] for k in keys} | {"defects": cli.get("defects", [])},
        {k: api[k] for k in keys} | {"defects": api["defects"]},
    )


@given(column=st.sampled_from(NUMBER_COLUMNS), value=ODD_VALUES)
@example(column=("workflow_runs", "input_tokens"), value="many")
@example(column=("step_executions", "output_tokens"), value="lots")
@example(column=("workflow_runs", "output_tokens"), value=b"\x00")
@example(column=("step_executions", "input_tokens"), value=1.5)
@example(column=("workflow_runs", "cost_usd"), value=float("inf"))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_status_and_ticket_show_read_odd_numbers_as_the_api_does(
    home: Path, column: tuple[str, str], value: Any
) -> None:
    table, name = column
    conn = sqlite3.connect(home / "tickets.db", timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA ignore_check_constraints = ON")  # as any client may
        (before,) = conn.execute(f"SELECT {name} FROM {table}").fetchone()
        conn.execute(f"UPDATE {table} SET {name} = ?", (stored(value),))
        try:
            for args in ("status",), ("status", "--json"), ("ticket", "show", "1"):
                done = swarm_inproc(home, *args)
                assert done.returncode == 0, (args, done.stdout, done.stderr)
                assert "Traceback" not in done.stdout + done.stderr, args
            done = swarm_inproc(home, "ticket", "show", "1", "--json")
            assert done.returncode == 0, done.stderr
            cli = json.loads(done.stdout)
            api = models.TicketDetail.model_validate(cli).model_dump(mode="json")
            for cli_run, api_run in zip(cli["runs"], api["runs"], strict=True):
                assert common(cli_run, api_run)[0] == common(cli_run, api_run)[1]
                for cli_step, api_step in zip(cli_run["steps"], api_run["steps"], strict=True):
                    assert common(cli_step, api_step)[0] == common(cli_step, api_step)[1]
        finally:
            conn.execute(f"UPDATE {table} SET {name} = ?", (before,))
    finally:
        conn.close()


def test_a_text_token_count_is_null_with_a_defect_under_json(home: Path) -> None:
    """`ticket show --json` never passes on a stored value of the wrong type: the column is
    null and `defects` names it (as `GET /v1/tickets/ID` says)."""
    conn = sqlite3.connect(home / "tickets.db", timeout=30, isolation_level=None)
    try:
        conn.execute("UPDATE workflow_runs SET input_tokens = 'many'")
        done = swarm_inproc(home, "ticket", "show", "1", "--json")
    finally:
        conn.execute("UPDATE workflow_runs SET input_tokens = 5")
        conn.close()
    run = json.loads(done.stdout)["runs"][0]
    assert run["input_tokens"] is None
    assert run["defects"] == ["input_tokens: not an integer ('many')"]
