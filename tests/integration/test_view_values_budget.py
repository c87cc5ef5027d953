"""A view carries at most `VIEW_VALUES_BYTES` of runs' and of steps' `inputs` and
`outputs`: a ticket whose runs and steps each held a few MiB of legal values made views of
any size (100 runs of 100 steps with 4 MiB of outputs each: a 40 GB ticket detail). The
newest values come first, the newest run's and step's always whole, and the rest are
named in `left_out`, to be read a page of one at a time."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Target
from tests.integration.test_big_record_values import text
from tests.support.api import start_api
from tests.support.cli import swarm_inproc

from swarm_engine.service import runs as views
from swarm_engine.store import open_store

MiB = 1024 * 1024
STEPS = 12
RUNS = 8


def big(target: Target, n: int) -> str:
    """SQL for a JSON object of about `n` bytes."""
    if target.dialect == "sqlite":
        return f"json_object('v', {text(target, n)})"
    return f"jsonb_build_object('v', {text(target, n)})"


def write_ticket(target: Target) -> None:
    """Ticket 1: `RUNS` runs with 3 MiB of inputs and outputs each; its newest run has
    `STEPS` steps with 3 MiB of outputs each (and 1 KiB of inputs)."""
    target.sql(
        "INSERT INTO tickets (title, status, agent_id, inputs) VALUES ('t', 'done', 'echo', '{}')"
    )
    for n in range(1, RUNS + 1):
        target.sql(
            "INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, execution_mode,"
            f" status, inputs, outputs) VALUES (1, {n}, 'a-{n}', 'single', 'done',"
            f" {big(target, 3 * MiB)}, {big(target, 3 * MiB)})"
        )
    for n in range(STEPS):
        target.sql(
            "INSERT INTO step_executions (run_id, step_id, agent_name, agent_version,"
            f" agent_kind, status, inputs, outputs) VALUES ({RUNS}, 's{n}', 'echo', '1',"
            f" 'echo', 'done', {big(target, 1024)}, {big(target, 3 * MiB)})"
        )


def values_bytes(records: list[dict[str, object]]) -> int:
    return sum(len(json.dumps(r.get(k))) for r in records for k in ("inputs", "outputs"))


def check_window(records: list[dict[str, object]], each: int) -> None:
    """Oldest first: the newest ones have their values, within the budget; the older ones
    name what was left out; none has both."""
    shown = [r for r in records if r.get("outputs") is not None]
    left = [r for r in records if r.get("left_out")]
    assert shown and left, records
    assert len(shown) + len(left) == len(records)
    assert records[-len(shown) :] == shown  # the newest ones
    assert all(r["left_out"] == ["inputs", "outputs"] and r["inputs"] is None for r in left)
    assert values_bytes(shown) <= views.VIEW_VALUES_BYTES + len(shown) * 64
    assert len(shown) == views.VIEW_VALUES_BYTES // each  # as many as fit


def test_views_carry_a_bounded_amount_of_values(store_target: Target, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", **store_target.env).returncode == 0
    write_ticket(store_target)
    store = open_store(store_target.target)
    detail = views.runs_with_steps(store, 1)
    check_window(detail.items, 6 * MiB)
    newest = detail.items[-1]
    assert newest["steps_total"] == STEPS
    check_window(newest["steps"], 3 * MiB + 1024)
    # each left out value is given whole by a page of one
    first_step = newest["steps"][0]
    assert first_step["left_out"]
    (alone,) = views.steps(store, RUNS, before=first_step["id"] + 1, limit=1).items
    assert len(alone["outputs"]["v"]) == 3 * MiB and "left_out" not in alone
    oldest = views.run(store, detail.items[0]["id"])
    assert len(oldest["inputs"]["v"]) == 3 * MiB and "left_out" not in oldest
    # the same windows through the HTTP API, and the CLI's JSON
    env = store_target.env
    api = start_api(home, **env)
    try:
        shown = api.get("/v1/tickets/1").json()
        assert len(shown["runs"]) == RUNS and shown["runs"][0]["left_out"] == ["inputs", "outputs"]
        assert shown["runs"][-1]["steps"][0]["left_out"] == ["inputs", "outputs"]
        page = api.get(f"/v1/runs/{RUNS}/steps").json()
        check_window(page, 3 * MiB + 1024)
    finally:
        api.stop()
    out = swarm_inproc(home, "ticket", "show", "1", "--json", **env)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout) < 2 * views.VIEW_VALUES_BYTES + 4 * MiB
    store.close()
