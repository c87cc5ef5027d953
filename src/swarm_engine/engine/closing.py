"""Closing a run whatever cancel comes meanwhile: the writes that end an attempt's run are
waited for to their end (`to_the_end`), since a run left `running` with this engine's id
would keep its ticket from every later claim for as long as the engine lives (the claim
guard). Used by `engine/runner.py`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from swarm_engine.engine.gate import StoreGate
from swarm_engine.engine.leases import LostReason, refused
from swarm_engine.errors import StoreBusyError, StoreError
from swarm_engine.store import Store, Ticket

log = logging.getLogger("swarm_engine.engine.runner")  # (its lines are the runner's)

T = TypeVar("T")

LEFT_RUNNING = "stopped: its engine ended this attempt without closing its run"
"""The error of a run closed by `close_left`."""


async def to_the_end(job: asyncio.Future[T]) -> T:
    """`job`'s result, waited for to its end: a cancel of this wait meanwhile does not
    stop the job (the caller is being cancelled already and raises that itself)."""
    while not job.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([job])
    return job.result()


async def taken_back(main: asyncio.Task[Any], stop_reason: list[LostReason]) -> None:
    """After a run's close that a cancel could not cut short (`to_the_end`): the lease
    keeper's cancel (`stop_reason` given: the attempt lost its ticket, which that close is
    about) is taken back; a cancel of the engine's own (its stop) still stops the run."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(0)  # a cancel asked for but not yet delivered is delivered now
    if stop_reason and main.cancelling():
        main.uncancel()
    if main.cancelling():
        raise asyncio.CancelledError


async def unfenced(
    gate: StoreGate, close: Callable[[int, str], None], run_id: int, error: str
) -> None:
    """Close this engine's own run `run_id` with `error` (`abandon_run`, `cancel_run`: not
    fenced, only that run's rows, always safe), retried while the store is busy, to the
    end whatever cancel comes meanwhile (the caller sees to that cancel: `taken_back`).
    A store error leaves the run open: `close_left` tries again."""
    with contextlib.suppress(StoreError):
        await to_the_end(asyncio.ensure_future(gate.retrying(close, run_id, error)))


async def close_left(
    gate: StoreGate, store: Store, ticket: Ticket, crash: Exception | None
) -> bool:
    """The attempt's task ends (done, failed, cancelled, lost, aborted, crashed): a run of
    the attempt that the store still marks `running` is closed `failed` now (with its
    unfinished steps; `LEFT_RUNNING`, or the crash), retried while the store is busy and to
    the end whatever cancel comes meanwhile. The task has stopped its steps' sandboxes by
    then. A store that stays busy past an engine stop's deadline leaves it to the lease
    reclaim (or the rule for gone engines): False then. A close the store refused is
    logged."""
    attempt = str(ticket.attempt_id)
    error = LEFT_RUNNING
    if crash is not None:  # (as `EngineSession.run_claimed` records a crash)
        error = f"internal error: {type(crash).__name__}: {crash}"
    write = gate.retrying(store.runs.abandon_attempt, attempt, error)
    try:
        closed = await to_the_end(asyncio.ensure_future(write))
    except StoreBusyError as exc:  # the engine gave the store up: its last line says so
        log.info(
            "ticket %s: its run could not be closed as its attempt ended: %s; left to"
            " the expired-lease reclaim", ticket.id, exc, extra={"ticket_id": ticket.id},
        )  # fmt: skip
        return False
    except StoreError as exc:
        log.log(
            logging.DEBUG if refused(exc) else logging.WARNING,
            "ticket %s: its run could not be closed as its attempt ended: %s",
            ticket.id, exc, extra={"ticket_id": ticket.id},
        )  # fmt: skip
        return True
    if closed and crash is None:  # (a crash is logged with its traceback)
        log.warning(
            "ticket %s: its run was left running as its attempt ended; closed failed",
            ticket.id, extra={"ticket_id": ticket.id},
        )  # fmt: skip
    return True
