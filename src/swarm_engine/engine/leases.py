"""One lease keeper per engine: renews every attempt's lease and the engine's heartbeat.

Every `heartbeat_interval` one short write transaction extends the leases of all the
attempts this engine holds (run ahead of every call queued on the store thread: it waits
only for the call under way, never behind the tries of writes that wait in turn for a
row another client holds), and another then stamps its `engines` row (a row another
client holds locked is passed over: the leases never wait on the heartbeat); nothing
else is written while the engine is idle. Between renewals a cheap read (every
`WATCH_INTERVAL`, only while attempts are held) notices an attempt that lost its ticket:
cancelled by a user, or reclaimed by another engine after the lease ran out.

A busy or failing store is a delay, not a failure: a renewal that fails transiently is
retried with backoff; one PostgreSQL rolls back to break a deadlock is run again at once
from its start, a few times (`Store.atomic`: its transactions are only store SQL). The
keeper gives an attempt up only when its lease is about to run out by this engine's own
clock (three quarters of `lease_ttl` after the last renewal that succeeded began on the
store thread, checked by a loop that never waits on the store); then the attempt's run
is stopped and its VM destroyed before any other engine can see the lease as expired,
and the store's fencing refuses every late write of that attempt.

Rows are any writer's, triggers included: a renewal the store refuses outright (a
trigger's `RAISE`, a constraint) is not transient. The renewal is one statement for all
held attempts; when the store refuses it, each lease is renewed apart, in a transaction
of its own, then the heartbeat: an attempt whose renewal is refused is ended by its
runner (`OnRefused`: the ticket failed with one line saying what the store said), the
others keep their leases. A heartbeat the store refuses stops the engine (it could not
show it is alive), with one line (`HeartbeatRefusedError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from swarm_engine.engine.gate import FIRST_BACKOFF, StoreGate, store_said
from swarm_engine.errors import (
    NotFoundError,
    StaleAttemptError,
    StoreBusyError,
    StoreError,
    StoreGoneError,
    SwarmError,
)
from swarm_engine.store import Store
from swarm_engine.store.engines import Beat

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.2
EXPIRY_TICK = 0.05
EXPIRY_MARGIN = 0.25
"""An attempt is given up a quarter of `lease_ttl` before its lease would expire."""
PASSED_OVER = (
    " (the renewals went through but passed its ticket row over: another client holds it locked)"
)
"""Why, when the renewals that went through left this lease alone: the ticket still this
attempt's (else the held-check had seen it lost), its row held locked elsewhere."""
LostReason = Literal["cancelled", "lost", "expired", "deleted", "ended"]
"""Why an attempt's run is stopped: its ticket was cancelled, lost (reclaimed, or given
another attempt), its lease `expired` by this engine's clock, unrenewed (the keeper said
so in a line of its own), deleted, or `ended` by the runner itself after one of its
writes was refused (`TicketRunner._refused`)."""
OnLost = Callable[[LostReason], None]
OnRefused = Callable[[StoreError], None]
"""Told (once) that the store refused the attempt's lease renewal, with what it raised."""


class HeartbeatRefusedError(StoreError):
    """The store refused the engine's heartbeat (a trigger's `RAISE`, a constraint): the
    engine cannot show that it is alive, so it stops (fail closed)."""


def refused(exc: BaseException) -> bool:
    """Whether a store call's error is the store refusing the write (a constraint, a
    trigger), as opposed to a delay (busy), its file gone, or fencing."""
    return isinstance(exc, StoreError) and not isinstance(
        exc, StoreBusyError | StoreGoneError | StaleAttemptError
    )


@dataclass
class Holding:
    ticket_id: int
    attempt_id: str
    renewed_at: float  # monotonic time the last successful renewal began on the store thread
    on_lost: OnLost
    on_refused: OnRefused
    finishing: bool = False
    refused: bool = False  # the store refused its renewal (`on_refused` was told)
    passed_over: bool = False
    """The last renewal that went through did not renew this lease: its ticket row held
    locked by another client (PostgreSQL: passed over, not waited for), or no longer
    this attempt's (which the held-check tells apart)."""


class LeaseKeeper:
    """Renews leases and the heartbeat for one engine; run `run()` as a supervised task."""

    def __init__(
        self,
        store: Store,
        gate: StoreGate,
        engine_id: str,
        *,
        lease_ttl: float,
        heartbeat_interval: float,
        busy_vms: Callable[[], int],
        state: Callable[[], str | None] = lambda: None,
        restore_row: Callable[[], bool] = lambda: False,
        row_restored: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.gate = gate
        self.engine_id = engine_id
        self.lease_ttl = lease_ttl
        self.heartbeat_interval = heartbeat_interval
        self.busy_vms = busy_vms
        self.state = state
        self.restore_row = restore_row
        """(On the store thread, in the renewal's transaction.) Put the engine's row back
        if it is gone; whether it was (`EngineRow.put_back`): only store SQL, as it is run
        again with the renewal when PostgreSQL rolls that back."""
        self.row_restored = row_restored
        """(On the store thread.) Told once a renewal that put the row back committed
        (`EngineRow.note_put_back`: counted and logged once, whatever the tries)."""
        self.holdings: dict[str, Holding] = {}
        self.renewals = 0
        self.failed_renewals = 0
        self.heartbeats_passed_over = 0
        """Renewals whose heartbeat could not be stamped (the engine's row locked by
        another client, or the heartbeat busy) while the leases were renewed."""
        self._wake = asyncio.Event()
        self._next_check = 0.0  # monotonic time of the next held-check
        self.aborting = False
        """Set when the engine aborts its runs: a lease given up then is logged by the
        abort (one line per ticket, `TicketRunner`), not here as well."""

    # -- what runners use ------------------------------------------------------------------
    def hold(self, ticket_id: int, attempt_id: str, on_lost: OnLost, on_refused: OnRefused) -> None:
        """Keep this attempt's lease (its claim just set one `lease_ttl` long). `on_refused`
        is told if the store refuses its renewal; until the attempt is released, its lease
        is not renewed and runs out by this engine's clock as ever (fail closed)."""
        if not self.holdings:  # an idle keeper starts watching; its first look waits a tick
            self._next_check = time.monotonic() + WATCH_INTERVAL
            self._wake.set()
        self.holdings[attempt_id] = Holding(
            ticket_id, attempt_id, time.monotonic(), on_lost, on_refused
        )

    def finishing(self, attempt_id: str) -> None:
        """The runner is about to write the attempt's end: when the ticket then leaves
        `claimed`/`running` under this attempt, that is this attempt's own doing."""
        holding = self.holdings.get(attempt_id)
        if holding is not None:
            holding.finishing = True

    def release(self, attempt_id: str) -> None:
        self.holdings.pop(attempt_id, None)

    def deadline(self, holding: Holding) -> float:
        """When this engine gives the attempt up (monotonic): `lease_ttl` after the start
        of its last successful renewal, less a safety margin, so that the run is stopped
        before any other engine can see the lease as expired."""
        return holding.renewed_at + self.lease_ttl * (1 - EXPIRY_MARGIN)

    def holds(self, attempt_id: str) -> bool:
        """Whether this engine still believes it holds the attempt's lease."""
        holding = self.holdings.get(attempt_id)
        return holding is not None and time.monotonic() < self.deadline(holding)

    # -- the side task ---------------------------------------------------------------------
    async def run(self) -> None:
        """Three loops: renewals (they may wait on a busy store), the held-check (a read
        that may wait too), and local expiry, which never waits on the store. What ends
        one ends the keeper, raised as it came (a `SwarmError` says why in one line)."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._renew_loop())
                group.create_task(self._watch_loop())
                group.create_task(self._expiry_loop())
        except ExceptionGroup as group:
            first = group.exceptions[0]
            if len(group.exceptions) == 1 and isinstance(first, SwarmError):
                raise first from None
            raise

    async def _renew_loop(self) -> None:
        backoff = FIRST_BACKOFF
        while True:
            if await self._renew():
                backoff = FIRST_BACKOFF
                await asyncio.sleep(self.heartbeat_interval)
            else:
                await asyncio.sleep(min(backoff, self.heartbeat_interval))
                backoff = min(backoff * 2, self.heartbeat_interval)

    async def _watch_loop(self) -> None:
        while True:
            wait = max(0.0, self._next_check - time.monotonic()) if self.holdings else None
            self._wake.clear()
            if wait is None:
                await self._wake.wait()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            if self.holdings and time.monotonic() >= self._next_check:
                await self._check_held()
                self._next_check = time.monotonic() + WATCH_INTERVAL

    async def _expiry_loop(self) -> None:
        while True:
            self._expire_locally()
            await asyncio.sleep(EXPIRY_TICK)

    async def _renew(self) -> bool:
        ids = list(self.holdings)
        try:
            started, (kept, refusals) = await self.gate.first(self._timed_write, ids)
        except StoreBusyError as exc:
            self.failed_renewals += 1
            self.gate.warn(f"lease renewal delayed (store busy): {exc}")
            return False
        self.renewals += 1
        for attempt_id in ids:
            holding = self.holdings.get(attempt_id)
            if holding is None:
                continue
            holding.passed_over = attempt_id not in kept and attempt_id not in refusals
            if attempt_id in kept:
                holding.renewed_at = started
            elif attempt_id in refusals and not holding.refused:
                holding.refused = True
                holding.on_refused(refusals[attempt_id])
        return True

    def _timed_write(
        self, attempt_ids: list[str]
    ) -> tuple[float, tuple[set[str], dict[str, StoreError]]]:
        """`write`, and when it began on the store thread (monotonic): a lease it renews
        runs from then on, not from when the renewal was queued (the store's own clock
        starts the new lease later still, as its transaction starts)."""
        began = time.monotonic()
        return began, self.write(attempt_ids)

    def write(self, attempt_ids: list[str]) -> tuple[set[str], dict[str, StoreError]]:
        """One renewal (on the store thread): the leases in one transaction, then the
        heartbeat in another, so that the heartbeat never holds the leases hostage (its
        `engines` row another client holds locked is passed over, and a heartbeat that
        is busy all the same leaves the leases renewed: it is tried again next round).
        Returns the attempts still held, and those whose renewal the store refused. Each
        transaction waits at most a short while for a row lock held elsewhere
        (`EngineStore.short_lock_wait`) and is only store SQL, so PostgreSQL rolling it
        back to break a deadlock runs it again from its start (`Store.atomic`); the
        engine's row put back in it is counted and logged once it commits
        (`row_restored`)."""
        kept, refusals = self._renew_all(attempt_ids)
        try:
            self._beat()
        except StoreBusyError as exc:
            if not attempt_ids or isinstance(exc, StoreGoneError):
                raise  # (nothing else was written: the renewal as a whole is delayed)
            self.heartbeats_passed_over += 1
            self.gate.warn(f"heartbeat delayed (store busy), the leases renewed: {exc}")
        return kept, refusals

    def _renew_all(self, attempt_ids: list[str]) -> tuple[set[str], dict[str, StoreError]]:
        if not attempt_ids:
            return set(), {}

        def renew() -> set[str]:
            self.store.engines.short_lock_wait()
            return self.store.tickets.renew_leases(
                self._still_held(attempt_ids), self.lease_ttl, self.engine_id
            )

        try:
            return self.store.atomic(renew), {}
        except StoreError as exc:
            if not refused(exc):
                raise
        # refused as a whole: which lease does the store refuse?
        kept, refusals = set(), {}
        for attempt_id in attempt_ids:
            try:
                kept |= self.store.atomic(functools.partial(self._renew_one, attempt_id))
            except StoreError as exc:
                if not refused(exc):
                    raise
                refusals[attempt_id] = exc
        return kept, refusals

    def _beat(self) -> None:
        put_back: list[bool] = []  # (the committed try's: each try starts it anew)
        locked: list[bool] = []

        def beat() -> None:
            put_back.clear()
            locked.clear()
            self.store.engines.short_lock_wait()
            put_back.append(self._heartbeat(locked))

        self.store.atomic(beat)
        self._told(put_back)
        if any(locked):
            self.heartbeats_passed_over += 1
            self.gate.warn(
                "heartbeat delayed: another client holds this engine's row in engines"
                " locked (the leases are renewed all the same)"
            )

    def _renew_one(self, attempt_id: str) -> set[str]:
        self.store.engines.short_lock_wait()
        return self.store.tickets.renew_leases(
            self._still_held([attempt_id]), self.lease_ttl, self.engine_id
        )

    def _still_held(self, attempt_ids: list[str]) -> list[str]:
        """(On the store thread, inside the renewal's transaction: on SQLite once its
        write lock is taken.) The attempts this engine still holds by its own clock now. A
        renewal queued while it held them may reach the store only after it gave them up
        (another client held the write lock past the lease): renewing them then would keep
        their tickets `running`, with nobody running them, for one more lease."""
        return [a for a in attempt_ids if self.holds(a)]

    def _told(self, put_back: list[bool]) -> None:
        if any(put_back):
            self.row_restored()

    def _heartbeat(self, locked: list[bool]) -> bool:
        """Stamp the engine's row; a row another writer deleted (the heartbeat touches no
        row) is put back at once, with the same id, and stamped: whether it was (only
        store SQL, in the caller's transaction). A row another client holds locked is
        passed over (`locked` told so): stamped at a later round."""
        try:
            beat = self._stamp()
            if beat == "locked":
                locked.append(True)
            if beat != "missing":
                return False
            if not self.restore_row():
                return False
            self._stamp()
            return True
        except StoreError as exc:
            if not refused(exc):
                raise
            raise HeartbeatRefusedError(
                f"its heartbeat could not be recorded: the store refused it ({store_said(exc)})"
            ) from exc

    def _stamp(self) -> Beat:
        return self.store.engines.heartbeat(self.engine_id, self.busy_vms(), self.state())

    async def _check_held(self) -> None:
        ids = list(self.holdings)
        try:
            held = await self.gate(self.store.tickets.held, ids)
        except StoreBusyError:
            return  # a read that could not be done now is done at the next tick
        for attempt_id in ids:
            if attempt_id in held or attempt_id not in self.holdings:
                continue
            holding = self.holdings.pop(attempt_id)
            if holding.finishing:
                continue  # this attempt itself just ended the ticket
            reason: LostReason = "lost"
            try:
                now = await self.gate(self.store.tickets.get, holding.ticket_id)
                if now.attempt_id == attempt_id and now.status == "cancelled":
                    reason = "cancelled"
            except NotFoundError:  # another writer deleted the ticket
                reason = "deleted"
            except SwarmError:  # the ticket row is unreadable: the lease is lost
                pass
            holding.on_lost(reason)

    def _expire_locally(self) -> None:
        now = time.monotonic()
        for attempt_id, holding in list(self.holdings.items()):
            if now >= self.deadline(holding):
                log.log(
                    logging.DEBUG if self.aborting else logging.ERROR,
                    "ticket %s: lease ran out after %.1fs without a renewal%s; stopping its run",
                    holding.ticket_id,
                    now - holding.renewed_at,
                    PASSED_OVER if holding.passed_over else "",
                    extra={"ticket_id": holding.ticket_id},
                )
                del self.holdings[attempt_id]
                holding.on_lost("expired")
