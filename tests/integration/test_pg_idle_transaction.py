"""PostgreSQL: a client of ours that stops inside a transaction (a frozen engine, a cut
network that leaves the socket open) holds its row locks only until the server's
`idle_in_transaction_session_timeout` ends its session: another writer of those rows (a
`ticket cancel`) then goes through, and the frozen client, once it goes on, meets a busy
store, not a crash, and its next transaction works on a new connection. Every connection
sets the timeout unless the server, database, role or URL chose one (`store/postgres.py`).
Real server, real command."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from tests.support.cli import swarm, swarm_inproc
from tests.support.postgres import pg_query, psql

from swarm_engine.errors import StoreBusyError
from swarm_engine.store import Store, open_store
from swarm_engine.store.postgres import IDLE_IN_TRANSACTION_MS


def with_options(url: str, options: str) -> str:
    """`url` with libpq's `options` (server settings for each of its sessions)."""
    return f"{url}{'&' if '?' in url else '?'}options={quote(options)}"


def idle_timeout(store: Store) -> int:
    """The session's `idle_in_transaction_session_timeout`, in ms (0: no limit)."""
    row = store.db.one(
        "SELECT setting FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'"
    )
    assert row is not None
    return int(row[0])


@pytest.fixture
def store(pg_store: Store) -> Store:
    return pg_store


def test_each_connection_bounds_its_idle_transactions(store: Store) -> None:
    assert idle_timeout(store) == IDLE_IN_TRANSACTION_MS


def test_a_value_chosen_in_the_url_or_the_database_is_kept(pg_url: str) -> None:
    chosen = open_store(with_options(pg_url, "-c idle_in_transaction_session_timeout=1500"))
    try:
        assert idle_timeout(chosen) == 1500
    finally:
        chosen.close()
    off = open_store(with_options(pg_url, "-c idle_in_transaction_session_timeout=0"))
    try:
        assert idle_timeout(off) == 0  # no limit, as whoever set it chose
    finally:
        off.close()
    database = pg_query(pg_url, "SELECT current_database() AS name")[0]["name"]
    psql(pg_url, f'ALTER DATABASE "{database}" SET idle_in_transaction_session_timeout = 90000')
    by_database = open_store(pg_url)
    try:
        assert idle_timeout(by_database) == 90_000
    finally:
        by_database.close()


def test_a_frozen_transaction_lets_go_of_its_rows(
    pg_url: str, store: Store, tmp_path: Path
) -> None:
    ticket = store.tickets.create(title="held", agent_id="echo", inputs={"n": 1})
    # the frozen client: a store whose sessions end after 1 s idle in a transaction
    frozen = open_store(with_options(pg_url, "-c idle_in_transaction_session_timeout=1000"))
    locked, resume, seen = threading.Event(), threading.Event(), []

    def hold() -> None:
        try:
            with frozen.db.transaction():
                frozen.db.run(
                    "UPDATE tickets SET priority = priority + 1 WHERE id = %(id)s", {"id": ticket}
                )
                locked.set()
                resume.wait(120)  # frozen mid-transaction, holding the row's lock
                frozen.db.run("SELECT 1")
        except BaseException as exc:
            seen.append(exc)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(30)
        # another writer of the row, waiting for a lock at most 20 s: without the
        # timeout it ends with exit 6 (lock timeout), since the holder never lets go
        done = swarm(
            tmp_path / "home", "ticket", "cancel", str(ticket),
            SWARM_DATABASE_URL=pg_url, SWARM_BUSY_TIMEOUT="20",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    finally:
        resume.set()
        holder.join(60)
    assert not holder.is_alive()
    # the frozen client, going on, met a busy store (its session was ended), not a crash
    assert len(seen) == 1 and isinstance(seen[0], StoreBusyError), seen
    row = pg_query(pg_url, "SELECT status, priority FROM tickets WHERE id = %(id)s",
                   {"id": ticket})  # fmt: skip
    assert row == [{"status": "cancelled", "priority": 0}]  # its write undone
    # and its next transaction works, on a new connection
    with frozen.db.transaction():
        assert frozen.db.one("SELECT 1 AS one") is not None
    frozen.close()


def hold_rows(url: str, ids: list[int]) -> psycopg.Connection[Any]:
    """A client's open transaction holding these ticket rows locked (`FOR UPDATE`), idle."""
    client = psycopg.connect(url)
    client.execute("SELECT id FROM tickets WHERE id = ANY(%(ids)s) FOR UPDATE", {"ids": ids})
    return client


def claimed(store: Store, n: int) -> list[tuple[int, str]]:
    """`n` tickets claimed by one engine: (id, attempt id) each."""
    store.engines.register("e1", kind="daemon", host="h", pid=1, max_vms=n, backend="process")
    for i in range(n):
        store.tickets.create(title=f"t{i}", agent_id="echo")
    got = store.tickets.claim_next(engine_id="e1", attempt_id="a", lease_ttl=30, limit=n)
    return [(t.id, str(t.attempt_id)) for t in got]


def test_a_row_locked_elsewhere_costs_only_its_own_lease_renewal(pg_url: str) -> None:
    """A client holding one running ticket's row locked: the engine's renewal skips that
    lease and renews the others at once (before, it waited for the lock up to the busy
    timeout, and then renewed none: every lease of the engine ran out together)."""
    store = open_store(pg_url, busy_timeout=5)
    try:
        (one, a1), (_, a2) = claimed(store, 2)
        client = hold_rows(pg_url, [one])
        try:
            assert store.tickets.renew_leases([a1, a2], lease_ttl=30, engine_id="e1") == {a2}
            assert store.tickets.held([a1, a2]) == {a1, a2}  # (still its: not lost)
        finally:  # its locks let go before the next call (a close alone lets the
            client.rollback()  # server notice the gone client later, the rows still locked)
            client.close()
        assert store.tickets.renew_leases([a1, a2], lease_ttl=30, engine_id="e1") == {a1, a2}
    finally:
        store.close()


def test_the_reclaim_passes_over_an_expired_row_locked_elsewhere(pg_url: str) -> None:
    """Two expired tickets, one held locked by a frozen client: the reclaim re-queues the
    other and leaves that one for a later round (before, it waited for the lock up to the
    busy timeout on the engine's store thread, its own renewals waiting behind it, and
    then reclaimed neither)."""
    store = open_store(pg_url, busy_timeout=5)
    try:
        (one, _), (two, _) = claimed(store, 2)
        psql(pg_url, "UPDATE tickets SET lease_expires_at = now() - interval '1 minute'")
        client = hold_rows(pg_url, [one])
        try:
            assert [(e.ticket_id, e.status) for e in store.tickets.reclaim_expired()] == [
                (two, "open")
            ]
        finally:  # its locks let go before the next call (a close alone lets the
            client.rollback()  # server notice the gone client later, the rows still locked)
            client.close()
        assert [(e.ticket_id, e.status) for e in store.tickets.reclaim_expired()] == [(one, "open")]
    finally:
        store.close()


def test_a_session_limit_too_short_for_a_transaction_is_refused_in_one_line(
    pg_url: str, tmp_path: Path
) -> None:
    """A limit of milliseconds (a typo for seconds, say) would end every session in the
    middle of its transactions: each write would fail as a busy store and be retried in
    vain until `busy_timeout`, ending as "unavailable for now". It is refused at once,
    named with where it was set; nothing is written."""
    home = tmp_path / "home"
    short = with_options(pg_url, "-c idle_in_transaction_session_timeout=5")
    done = swarm(home, "ticket", "create", "--title", "t", "--agent", "echo",
                 SWARM_DATABASE_URL=short, SWARM_BUSY_TIMEOUT="3")  # fmt: skip
    assert done.returncode == 6, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "idle_in_transaction_session_timeout is 5ms (set by the URL's options" in lines[0]
    assert "needs at least 1000ms, or 0 (no limit)" in lines[0]
    assert "unavailable for now" not in lines[0]
    # the smallest value, many times: the check's own connection holds no transaction
    # open for the limit to end first (it lost that race to the server's error now and then)
    tiny = with_options(pg_url, "-c idle_in_transaction_session_timeout=1")
    for _ in range(20):
        done = swarm_inproc(home, "ticket", "list", SWARM_DATABASE_URL=tiny)
        assert done.returncode == 6, done
        assert "idle_in_transaction_session_timeout is 1ms (set by" in done.stderr, done.stderr
    database = pg_query(pg_url, "SELECT current_database() AS name")[0]["name"]
    psql(pg_url, f'ALTER DATABASE "{database}" SET idle_in_transaction_session_timeout = 999')
    done = swarm(home, "status", "--init", SWARM_DATABASE_URL=pg_url)
    assert done.returncode == 6 and "is 999ms (set by database)" in done.stderr, done
    # the schema was never made: nothing was written by either command
    assert pg_query(pg_url, "SELECT to_regclass('tickets') IS NULL AS none")[0]["none"]
    # the smallest allowed value, and no limit, are taken
    for value in ("1000", "0"):
        psql(
            pg_url, f'ALTER DATABASE "{database}" SET idle_in_transaction_session_timeout = {value}'
        )
        assert swarm(home, "status", "--init", SWARM_DATABASE_URL=pg_url).returncode == 0
