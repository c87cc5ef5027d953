"""PostgreSQL: a row another client holds locked (an open transaction: a frozen engine, a
`psql` session's `SELECT ... FOR UPDATE`) costs only the ticket it belongs to. The lease
reclaim passes over an expired ticket one of whose run or step rows is held, instead of
waiting for the lock (on the engine's store thread, its lease renewals queued behind it)
and then failing the whole round; the lease renewal renews the engine's leases even
while its own `engines` row is held. Real server; each client is a real connection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from tests.support.postgres import pg_query, psql

from swarm_engine.engine.gate import StoreGate
from swarm_engine.engine.leases import LeaseKeeper
from swarm_engine.store import Store, open_store

BUSY = 5.0
"""The stores' busy timeout: a wait for the held lock would end busy after it."""


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    opened = open_store(pg_url, busy_timeout=BUSY)
    try:
        yield opened
    finally:
        opened.close()


@contextmanager
def locked(url: str, sql: str, **params: Any) -> Iterator[None]:
    """Another client's transaction holding the rows `sql` (a `SELECT ... FOR UPDATE`)
    picks, idle until the block ends; rolled back then (a close alone lets the server
    release the locks a moment later)."""
    client = psycopg.connect(url)
    try:
        assert client.execute(sql, params).fetchall(), "the client locked no row"
        yield
    finally:
        client.rollback()
        client.close()


def running(store: Store, n: int) -> list[tuple[int, str, int, int]]:
    """`n` tickets claimed by engine e1, each with a run started and one step queued:
    (ticket id, attempt id, run id, step id) each."""
    store.engines.register("e1", kind="daemon", host="h", pid=1, max_vms=n, backend="process")
    for i in range(n):
        store.tickets.create(title=f"t{i}", agent_id="echo")
    out = []
    for ticket in store.tickets.claim_next(engine_id="e1", attempt_id="a", lease_ttl=30, limit=n):
        run = store.runs.start_run(
            ticket, engine_id="e1", workflow_name=None, workflow_version=None, inputs={}
        )
        step = store.runs.add_step(
            run, step_id="main", agent_name="echo", agent_version="1", agent_kind="process",
            inputs={},
        )  # fmt: skip
        out.append((ticket.id, str(ticket.attempt_id), run, step))
    return out


def expire_all(url: str) -> None:
    psql(url, "UPDATE tickets SET lease_expires_at = now() - interval '1 minute'")


def statuses(url: str) -> dict[int, tuple[str, ...]]:
    """Each ticket's status, with its runs' and their steps' (by id)."""
    rows = pg_query(
        url,
        "SELECT t.id, t.status, r.status AS run, s.status AS step FROM tickets t"
        " JOIN workflow_runs r ON r.ticket_id = t.id"
        " JOIN step_executions s ON s.run_id = r.id ORDER BY t.id",
    )
    return {r["id"]: (r["status"], r["run"], r["step"]) for r in rows}


@pytest.mark.parametrize(
    "held",
    [
        "SELECT id FROM workflow_runs WHERE id = %(run)s FOR UPDATE",
        "SELECT id FROM step_executions WHERE id = %(step)s FOR UPDATE",
    ],
    ids=["run-row", "step-row"],
)
def test_the_reclaim_passes_over_a_ticket_whose_run_rows_are_locked_elsewhere(
    pg_url: str, store: Store, held: str
) -> None:
    """Two expired tickets; a client holds a row of the first one's run. The reclaim
    re-queues the second at once and leaves the first as it is this round, saying why
    (before: it waited for the lock, then failed as a busy store: neither re-queued,
    round after round, while the client held the row)."""
    (one, _, run, step), (two, _, _, _) = running(store, 2)
    expire_all(pg_url)
    with locked(pg_url, held, run=run, step=step):
        got = store.tickets.reclaim_expired()
        assert [(e.ticket_id, e.status) for e in got] == [(one, "stuck"), (two, "open")]
        assert "locked by another client" in str(got[0].error)
        assert statuses(pg_url) == {
            one: ("running", "running", "queued"),  # left whole: nothing half-closed
            two: ("open", "failed", "skipped"),  # its step never started
        }
    # once the client lets go, the next round re-queues it
    got = store.tickets.reclaim_expired()
    assert [(e.ticket_id, e.status) for e in got] == [(one, "open")]
    assert statuses(pg_url)[one] == ("open", "failed", "skipped")


def test_a_reclaim_never_closes_a_run_locked_by_its_live_attempt(pg_url: str, store: Store) -> None:
    """The rows a reclaim passes over are not closed later in the same round by another
    path: the ticket whose lease is live is never touched, locked or not."""
    (one, _, run, _), (two, _, _, _) = running(store, 2)
    psql(
        pg_url,
        f"UPDATE tickets SET lease_expires_at = now() - interval '1 minute' WHERE id = {two}",
    )
    with locked(pg_url, "SELECT id FROM workflow_runs WHERE id = %(run)s FOR UPDATE", run=run):
        got = store.tickets.reclaim_expired()
    assert [(e.ticket_id, e.status) for e in got] == [(two, "open")]
    assert statuses(pg_url)[one] == ("running", "running", "queued")


def test_the_renewal_renews_the_leases_while_the_engine_row_is_locked_elsewhere(
    pg_url: str, store: Store
) -> None:
    """A client holds the engine's own `engines` row: its heartbeat cannot be stamped
    now, but the leases of its tickets are renewed all the same, at once (before: the
    renewal's transaction waited for the row up to the busy timeout, then renewed none,
    and every lease of the engine ran out together)."""
    tickets = running(store, 2)
    psql(pg_url, "UPDATE tickets SET lease_expires_at = now() + interval '2 seconds'")
    gate = StoreGate()
    keeper = LeaseKeeper(store, gate, "e1", lease_ttl=30, heartbeat_interval=1, busy_vms=lambda: 2)
    for ticket_id, attempt, _, _ in tickets:  # (only the leases it holds are renewed)
        keeper.hold(ticket_id, attempt, lambda reason: None, lambda exc: None)
    try:
        with locked(pg_url, "SELECT id FROM engines WHERE id = 'e1' FOR UPDATE"):
            kept, refused = keeper.write([attempt for _, attempt, _, _ in tickets])
            assert (kept, refused) == ({t[1] for t in tickets}, {})
            left = pg_query(
                pg_url,
                "SELECT count(*) AS n FROM tickets"
                " WHERE lease_expires_at > now() + interval '20 seconds'",
            )
            assert left == [{"n": 2}]  # both renewed a whole lease
            assert keeper.heartbeats_passed_over == 1
        # the client gone, the next renewal stamps the heartbeat again
        beat = pg_query(pg_url, "SELECT heartbeat_at FROM engines WHERE id = 'e1'")
        keeper.write([attempt for _, attempt, _, _ in tickets])
        again = pg_query(pg_url, "SELECT heartbeat_at FROM engines WHERE id = 'e1'")
        assert again[0]["heartbeat_at"] > beat[0]["heartbeat_at"]
        assert keeper.heartbeats_passed_over == 1
    finally:
        gate.close()


def test_engines_recorded_dead_pass_over_a_row_locked_elsewhere(pg_url: str, store: Store) -> None:
    """Two engines silent for long, one's `engines` row held by a client: the other is
    recorded dead at once, that one at a later round (before: the round waited for the
    lock up to the busy timeout, then recorded neither)."""
    for name in ("gone1", "gone2"):
        store.engines.register(name, kind="daemon", host="h", pid=1, max_vms=1, backend="process")
    psql(pg_url, "UPDATE engines SET heartbeat_at = now() - interval '1 hour'")
    with locked(pg_url, "SELECT id FROM engines WHERE id = 'gone1' FOR UPDATE"):
        assert [e["id"] for e in store.engines.forget_silent(60)] == ["gone2"]
    assert [e["id"] for e in store.engines.forget_silent(60)] == ["gone1"]


def test_a_lease_given_up_for_its_ticket_row_held_elsewhere_says_so(
    pg_url: str, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A client holds one running ticket's own row: the renewal cannot write that lease
    (the others are renewed), so it runs out by the engine's clock and the keeper gives
    it up, by design, with one line that says why: the renewals passed its ticket row
    over, another client holding it locked. The other ticket keeps its lease."""
    (one, held, _, _), (two, free, _, _) = running(store, 2)
    lost: list[str] = []

    async def main() -> None:
        gate = StoreGate()
        keeper = LeaseKeeper(store, gate, "e1", lease_ttl=4, heartbeat_interval=1, busy_vms=int)
        for ticket_id, attempt in ((one, held), (two, free)):
            keeper.hold(ticket_id, attempt, lost.append, lambda exc: None)
        try:
            with locked(pg_url, f"SELECT id FROM tickets WHERE id = {one} FOR UPDATE"):
                assert await keeper._renew()
            assert keeper.holdings[held].passed_over and not keeper.holdings[free].passed_over
            keeper.holdings[held].renewed_at -= 4  # (its lease ran out by the engine's clock)
            with caplog.at_level(logging.ERROR, logger="swarm_engine.engine.leases"):
                keeper._expire_locally()
            assert lost == ["expired"] and list(keeper.holdings) == [free]
        finally:
            gate.close()

    asyncio.run(main())
    line = caplog.records[-1].getMessage()
    assert f"ticket {one}: lease ran out after" in line
    assert "passed its ticket row over: another client holds it locked" in line
