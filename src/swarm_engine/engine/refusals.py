"""How a ticket's attempt ends when the store refuses a write of its run: a trigger or
another writer changed or deleted the ticket, a constraint or a trigger's `RAISE`
refused the write or the lease's renewal, or the engine's own row is gone for good.

`Refusals` is the part of `engine/runner.py`'s `TicketRunner` that decides it: the
ticket is failed (or re-queued, or left as the store keeps it) with one line, the run
stops at once, and nothing of it is retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Literal

from swarm_engine.engine.gate import StoreGate, store_said
from swarm_engine.engine.leases import LeaseKeeper, LostReason, refused
from swarm_engine.engine.writes import Fate, RunWrites
from swarm_engine.errors import (
    AttemptEndedError,
    EngineRowLostError,
    StaleAttemptError,
    StoreError,
    TicketDeletedError,
)
from swarm_engine.store import Store, Ticket

log = logging.getLogger(__name__)

RECORDS = {
    "start_run": "the run's start",
    "add_step": "a step's row",
    "step_started": "a step's start",
    "step_finished": "a step's end",
    "close_run": "the run's end",
    "append": "a step's live log",
    "renew_leases": "the renewal of its lease",
}
"""What each fenced write of a run records, by the store call's name (for one line)."""


class Refusals:
    """A refused write's end of an attempt; mixed into `TicketRunner`, whose state it
    shares (declared here)."""

    store: Store
    gate: StoreGate
    keeper: LeaseKeeper
    writes: RunWrites
    on_row_lost: Callable[[str], None]
    _ended: dict[str, AttemptEndedError]
    _ending: dict[str, asyncio.Future[StaleAttemptError]]
    """The attempts whose refusal is being handled now (`_refused`), and its outcome."""
    _stops: dict[str, tuple[asyncio.Task[Any], Callable[[LostReason], None]]]
    _refusals: set[asyncio.Task[None]]

    async def _refused(self, ticket: Ticket, name: str, exc: StoreError) -> StaleAttemptError:
        """`_refused_once`, once per attempt: a second refusal of the same attempt while
        the first is being handled (its lease's renewal, refused as the run's end was)
        waits for the first's outcome instead of failing the ticket again and saying so
        twice."""
        attempt = str(ticket.attempt_id)
        if attempt in self._ended:
            return self._ended[attempt]
        pending = self._ending.get(attempt)
        if pending is not None:
            return await asyncio.shield(pending)
        ending: asyncio.Future[StaleAttemptError] = asyncio.get_running_loop().create_future()
        self._ending[attempt] = ending
        try:
            outcome = await self._refused_once(ticket, name, exc)
        except asyncio.CancelledError:
            ending.cancel()
            raise
        except BaseException as error:
            ending.set_exception(error)
            ending.exception()  # (retrieved: there may be no one waiting)
            raise
        finally:
            del self._ending[attempt]
        ending.set_result(outcome)
        return outcome

    async def _refused_once(self, ticket: Ticket, name: str, exc: StoreError) -> StaleAttemptError:
        """A fenced write of this attempt was refused: find out at once why, and end the
        attempt when it is over. If the attempt still holds the ticket (another writer
        changed a row of it, or a trigger deleted or changed the ticket inside the
        engine's own write, which was undone with it), the ticket is failed with one line
        saying so; if the ticket is gone, its run is stopped. Either way the run stops now
        (its slot is freed, nothing is retried) and one line is logged. Otherwise (a
        cancel, a reclaim) the lease keeper handles it, as ever: `exc` is returned. A write
        the store refused outright (a constraint, or a trigger's `RAISE`; its lease's
        renewal too, `renewal_refused`) fails the ticket the same way, its line saying
        what the store said. When the store refuses to fail the ticket as well, its run
        is closed as ended unrecorded (`RunWrites.refused`): the ticket stays as the store
        keeps it, is never run again (no reclaim re-queues it), and one line says so."""
        attempt = str(ticket.attempt_id)
        what = RECORDS.get(name, "a write of its run")
        line = (
            f"{what} could not be recorded: another writer (a trigger?) deleted or changed"
            " the ticket or its run during the engine's write"
        )
        if not isinstance(exc, StaleAttemptError):  # what the store (or a trigger) said
            line = f"{what} could not be recorded: the store refused it ({store_said(exc)})"
            exc = StaleAttemptError(f"ticket {ticket.id}: {line}")
        fate: Fate | Literal["unmarked"]
        try:
            fate = await self.gate.retrying_while(
                lambda: self.keeper.holds(attempt), self.writes.refused, ticket, line
            )
        except StoreError as mark:
            if not refused(mark):  # busy, its file gone: the lease's end settles it
                return exc
            # the failing and the run's mark refused too: nothing of its end can be
            # written; this engine leaves the ticket as the store keeps it and passes it
            # over (not waited for by --until-idle), and says so once
            await self.gate(self.store.tickets.frozen.add, ticket.id)  # (its thread's)
            line += (
                "; the store refused to fail the ticket and to close its run too"
                f" ({store_said(mark)}): both are left as the store keeps them, and this"
                " engine does not run the ticket again"
            )
            log.warning("ticket %s: %s", ticket.id, line, extra={"ticket_id": ticket.id})
            fate = "unmarked"
        if fate == "taken":
            return exc
        ended: AttemptEndedError
        if fate == "failed":
            log.warning("ticket %s failed: %s", ticket.id, line, extra={"ticket_id": ticket.id})
            ended = AttemptEndedError(f"ticket {ticket.id} failed: {line}")
        elif fate == "unmarked":
            ended = AttemptEndedError(f"ticket {ticket.id}: {line}")
        elif fate == "unrecorded":
            line += (
                "; the store refused to fail the ticket too: its run is closed, the ticket"
                " is left as the store keeps it and is not run again"
            )
            log.warning("ticket %s: %s", ticket.id, line, extra={"ticket_id": ticket.id})
            ended = AttemptEndedError(f"ticket {ticket.id}: {line}")
        else:
            ended = self._deleted(ticket, f"seen at {what}")
        self._ended[attempt] = ended
        self.keeper.release(attempt)  # not for the keeper to see as lost
        main, stop = self._stops.get(attempt, (None, None))
        if stop is not None and asyncio.current_task() is not main:
            stop("ended")  # a step's (or its log's) write: the run stops now
        return ended

    async def _left(self, ticket: Ticket, exc: EngineRowLostError) -> StaleAttemptError:
        """The run's start was refused because this engine's own row is gone for good
        (`EngineRowLostError`): the engine is told (`on_row_lost`: it stops) and the
        ticket, which never ran, is put back in the queue for another engine, its attempt
        not counted, with one line. If the store will not let it go back, it is failed as
        any refused write's ticket is (`_refused`)."""
        attempt = str(ticket.attempt_id)
        self.on_row_lost(str(exc))
        try:
            released = await self.gate.retrying_while(
                lambda: self.keeper.holds(attempt), self.store.tickets.release, ticket.id, attempt
            )
        except StoreError:
            released = False
        if not released:
            return await self._refused(ticket, "start_run", exc)
        line = (
            f"ticket {ticket.id}: re-queued for another engine: its run could not start, this"
            " engine's row in engines being gone for good"
        )
        log.warning("%s", line, extra={"ticket_id": ticket.id})
        ended = AttemptEndedError(line)
        self._ended[attempt] = ended
        self.keeper.release(attempt)
        return ended

    def renewal_refused(self, ticket: Ticket, exc: StoreError) -> None:
        """The lease keeper found that the store refuses this attempt's lease renewal (a
        trigger's `RAISE`, a constraint): the attempt is ended as a refused write of its
        run is (`_refused`), in a task of its own; the keeper goes on with the others."""

        async def end() -> None:
            if str(ticket.attempt_id) not in self._stops:  # its run is over already
                return
            try:
                await self._refused(ticket, "renew_leases", exc)
            except Exception:  # the lease's end (by the keeper's clock) settles it
                log.exception("ticket %s: ending its attempt failed", ticket.id)

        task = asyncio.create_task(end())
        self._refusals.add(task)
        task.add_done_callback(self._refusals.discard)

    @staticmethod
    def _deleted(ticket: Ticket, seen: str) -> TicketDeletedError:
        log.warning(
            "ticket %s was deleted by another writer during its run (%s); the run is stopped",
            ticket.id, seen, extra={"ticket_id": ticket.id},
        )  # fmt: skip
        return TicketDeletedError(f"ticket {ticket.id} was deleted during its run ({seen})")
