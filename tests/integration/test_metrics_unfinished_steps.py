"""`/metrics`' tally (`service/metrics.py`) counts each finished step once, within a
refresh of its end, however many unfinished steps come before it in id order: a step
still running when the walk reaches it is kept aside and counted once it ends (before,
the walk waited at it for up to 8 days and every later step's total froze)."""

from __future__ import annotations

import random
import threading

from tests.conftest import Target

from swarm_engine.records import Usage
from swarm_engine.service.metrics import Tally
from swarm_engine.store import Store, open_store

STEPS = 120
WORKERS = 4
AGED = {
    "sqlite": "UPDATE step_executions SET status = 'running', queued_at = strftime("
    "'%Y-%m-%dT%H:%M:%fZ', 'now', '-1 hour'), started_at = queued_at",
    "postgresql": "UPDATE step_executions SET status = 'running',"
    " queued_at = now() - interval '1 hour', started_at = now() - interval '1 hour'",
}
"""Every step running, queued past the tally's settling time (10 s) without waiting for
it."""


def _finish(store: Store, step: int) -> None:
    store.runs.step_finished(
        step, status="done", outputs=None, exit_code=0, error=None,
        usage=Usage(input_tokens=step),
    )  # fmt: skip


def _check(tally: Tally, target: Target) -> int:
    """The tally's totals equal the finished rows in the store; how many those are."""
    (row,) = target.rows(
        "SELECT count(*) AS n, coalesce(sum(input_tokens), 0) AS tokens"
        " FROM step_executions WHERE status NOT IN ('queued', 'running')"
        " AND duration_ms IS NOT NULL"
    )
    assert tally.steps.count == int(row["n"])
    assert tally.tokens.get(("m", "input"), 0) == int(row["tokens"])
    return int(row["n"])


def test_steps_after_unfinished_ones_are_counted_once(store_target: Target) -> None:
    store = open_store(store_target.target)
    store.engines.register("e", kind="daemon", host="h", pid=1, max_vms=1, backend="process")
    tid = store.tickets.create(title="x", agent_id="echo")
    ticket = store.tickets.claim(tid, engine_id="e", attempt_id="a1", lease_ttl=600)
    run_id = store.runs.start_run(
        ticket, engine_id="e", workflow_name=None, workflow_version=None, inputs={}
    )
    steps = []
    for i in range(STEPS):
        step = store.runs.add_step(
            run_id, step_id=f"s{i}", agent_name="echo", agent_version="1", agent_kind="echo",
            inputs={},
        )  # fmt: skip
        steps.append(step)
    store_target.sql(AGED[store_target.dialect])
    rng = random.Random(7)
    late = set(rng.sample(steps[1:], 15)) | {steps[0]}  # the first one runs longest
    now = [s for s in steps if s not in late]
    rng.shuffle(now)
    tally = Tally()

    def worker(share: list[int]) -> None:
        own = open_store(store_target.target)
        try:
            for step in share:
                _finish(own, step)
        finally:
            own.close()

    threads = [threading.Thread(target=worker, args=(now[i::WORKERS],)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):  # the tally reads while steps end
        tally.refresh(store, lambda *_: "m")
    for t in threads:
        t.join()
    tally.refresh(store, lambda *_: "m")
    assert _check(tally, store_target) == STEPS - len(late)
    assert tally.pending == late  # the unfinished ones, kept aside
    for step in sorted(late):
        _finish(store, step)
        tally.refresh(store, lambda *_: "m")
        _check(tally, store_target)
    tally.refresh(store, lambda *_: "m")
    assert _check(tally, store_target) == STEPS
    assert tally.pending == set()
    store.close()
