"""Every error text the store writes is one line of at most 500 characters
(`store/errortext.py`), whichever write method writes it, on SQLite and PostgreSQL alike:
`tickets.error` (and each status event's `note`, copied by a trigger),
`workflow_runs.error`, `step_executions.error`, `vms.error`."""

from __future__ import annotations

import pytest
from tests.conftest import Target

from swarm_engine.models import Usage
from swarm_engine.store import Store, open_store
from swarm_engine.store.errortext import MAX_ERROR_CHARS, bounded_error

HUGE = "first line names what failed\n" + "x" * 300_000 + "\r\n\tthe last line\x00 ends it"


def stored_errors(target: Target) -> list[str]:
    """Every error and note the store holds, whatever wrote it."""
    rows = [
        *target.rows("SELECT error AS e FROM tickets WHERE error IS NOT NULL"),
        *target.rows("SELECT error AS e FROM workflow_runs WHERE error IS NOT NULL"),
        *target.rows("SELECT error AS e FROM step_executions WHERE error IS NOT NULL"),
        *target.rows("SELECT error AS e FROM vms WHERE error IS NOT NULL"),
        *target.rows("SELECT note AS e FROM ticket_events WHERE note IS NOT NULL"),
    ]
    return [str(r["e"]) for r in rows]


def assert_bounded(texts: list[str]) -> None:
    assert texts, "nothing was written"
    for text in texts:
        assert len(text) <= MAX_ERROR_CHARS and text == " ".join(text.split()), text[:100]
        # (a step that never started says so first: `not run: ...`)
        assert text.removeprefix("not run: ").startswith("first line names what failed x")
        assert text.endswith("the last line\\x00 ends it") and " more characters) … " in text


def one_run(store: Store, engine: str) -> tuple[int, int, int]:
    """A claimed ticket's run with one step on a VM: (ticket id, run id, step id)."""
    store.engines.register(engine, kind="daemon", host="h", pid=1, max_vms=1, backend="process")
    tid = store.tickets.create(title="x", agent_id="echo")
    ticket = store.tickets.claim(tid, engine_id=engine, attempt_id=engine, lease_ttl=30)
    run_id = store.runs.start_run(
        ticket, engine_id=engine, workflow_name=None, workflow_version=None, inputs={}
    )
    step = store.runs.add_step(
        run_id, step_id="main", agent_name="echo", agent_version="1", agent_kind="echo", inputs={}
    )
    return tid, run_id, step


def test_the_run_writes_store_one_bounded_line(store_target: Target) -> None:
    store = open_store(store_target.target)
    tid, run_id, step = one_run(store, "e")
    store.vms.record_boot(
        "vm-1", backend="process", host="h", engine_id="e", owner_pid=1, memory_mb=64, vcpus=1
    )
    store.vms.record_destroyed("vm-1", HUGE)
    store.runs.step_finished(
        step, status="failed", outputs=None, exit_code=1, error=HUGE, usage=Usage()
    )
    ticket = store.tickets.get(tid)
    store.runs.finish_run(run_id, ticket, status="failed", error=HUGE)
    assert store.tickets.get(tid).status == "failed"
    store.close()
    assert_bounded(stored_errors(store_target))
    assert len(stored_errors(store_target)) == 5  # ticket, run, step, VM, the failed event


@pytest.mark.parametrize("how", ["abandon_run", "cancel_run", "fail_attempt", "reject"])
def test_the_last_resort_writes_store_one_bounded_line(store_target: Target, how: str) -> None:
    store = open_store(store_target.target)
    tid, run_id, _ = one_run(store, "e")
    if how == "abandon_run":
        store.runs.abandon_run(run_id, HUGE)
    elif how == "cancel_run":
        store.runs.cancel_run(run_id, HUGE, why=HUGE)
    elif how == "fail_attempt":
        assert store.tickets.fail_attempt(tid, "e", HUGE)
    else:
        other = store.tickets.create(title="y", agent_id="echo")
        assert store.tickets.reject(other, HUGE)
    store.close()
    assert_bounded(stored_errors(store_target))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "short",
        "a\nb",
        "y" * MAX_ERROR_CHARS,
        "z" * (MAX_ERROR_CHARS + 1),
        "w " * 5000,
        "\ud800" + "q" * 2000,
        "é" * 10_000_000,
    ],
)
def test_bounded_error_is_one_line_within_the_bound(text: str) -> None:
    line = bounded_error(text)
    assert len(line) <= MAX_ERROR_CHARS and "\n" not in line
    line.encode("utf-8")  # never a character the store cannot hold
    if len(" ".join(text.split())) <= MAX_ERROR_CHARS and "\ud800" not in text:
        assert line == " ".join(text.split())  # a line within the bound is kept whole
    else:
        assert "more characters) … " in line
