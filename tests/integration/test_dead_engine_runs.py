"""A dead engine's runs are closed only where its attempt no longer holds the ticket.

On PostgreSQL an engine is recorded dead when it holds no live ticket (one statement),
and its runs left `running` are closed (later statements, READ COMMITTED): a frozen
engine that woke up in between could claim a ticket and start its run, which was then
closed as a dead engine's, and its next write refused ("another writer deleted or
changed the ticket"): the ticket failed for good. A run whose ticket its attempt holds
is now left to that attempt (or, once its lease runs out, to the reclaim)."""

from __future__ import annotations

from tests.conftest import Target

from swarm_engine.store import open_store


def test_a_run_its_attempt_still_holds_is_not_closed_as_a_dead_engines(
    store_target: Target,
) -> None:
    store = open_store(store_target.target)
    try:
        store.engines.register("e1", kind="daemon", host="h", pid=1, max_vms=2, backend="process")
        for title in ("held", "lost"):
            store.tickets.create(title=title, agent_id="echo")
        held, lost = store.tickets.claim_next(engine_id="e1", attempt_id="a", lease_ttl=30, limit=2)
        runs = {}
        for ticket in (held, lost):
            runs[ticket.title] = store.runs.start_run(
                ticket, engine_id="e1", workflow_name=None, workflow_version=None, inputs={}
            )
        store_target.sql(  # the second ticket lost: reset by another writer
            f"UPDATE tickets SET status = 'open', attempt_id = NULL WHERE id = {lost.id}"
        )
        assert store.engines.close_runs_of(["e1"])
        status = {t: store.runs.get_run(run_id)["status"] for t, run_id in runs.items()}
        assert status == {"held": "running", "lost": "failed"}
    finally:
        store.close()
