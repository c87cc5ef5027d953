"""Reclaiming tickets whose lease ran out (`TicketStore.reclaim_expired`): re-queued or
failed, their runs closed, in one transaction; the live VMs of their expired attempts
stopped first (`Fence`), so that no ticket runs again while its old VM may still run.

PostgreSQL may roll the transaction back to break a deadlock or a serialization conflict
(`store/rerun.py`): it is then run again from its start (`Database.atomic`), the fence
included. That is safe because a fence is idempotent: it stops what the VMs still run,
and a second call finds nothing left of what the first stopped (it signals nothing and
says nothing), while a VM that could not be stopped is looked for again. Fencing again,
rather than trusting the rolled-back try's, is fail closed: each try that re-queues a
ticket has itself seen its VMs stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from swarm_engine.errors import StoreBusyError, StoreError
from swarm_engine.store.rows import decode_record

if TYPE_CHECKING:
    from swarm_engine.store.tickets import TicketStore

FENCED_VMS = 1000
"""At most this many VMs are handed to a reclaim's `Fence` at once."""
LOCKED_ELSEWHERE = (
    "a row of its run is locked by another client (an open transaction); tried again next round"
)
"""Why an expired ticket is left as it is this round when a row the reclaim would close
(a run or a step of it) is held locked elsewhere (`_locked_elsewhere`)."""
Fence = Callable[[list[dict[str, Any]]], dict[int, str]]
"""Called by `reclaim_expired` inside its transaction (again in each try of it that
PostgreSQL rolls back and the store runs again: it must be idempotent, as stopping what
runs is), before it changes anything, with
the live `vms` rows (each with its `ticket_id`) busy with a step of an expired attempt
and booted by the engine that holds the ticket; it stops what they run on this host and
returns, by ticket id, why a ticket must be left as it is this round (a VM that could not
be stopped): that ticket is not run again while the VM may still run."""


@dataclass(frozen=True, slots=True)
class Expired:
    """A ticket whose lease ran out, as the reclaimer left it."""

    ticket_id: int
    status: str
    """'open' (re-queued), 'failed' (attempts used up), or 'stuck': left as it is and
    tried again next round, `error` saying why: the store refused to change the row (a
    trigger's RAISE, a constraint; what it said), a VM of it could not be stopped, or a
    row of its run is locked by another client (`LOCKED_ELSEWHERE`)."""
    error: str | None = None
    refused: bool = False
    """'stuck' because the store refused the reclaim (not a VM the fence could not stop)."""


def reclaim_expired(store: TicketStore, fence: Fence | None = None) -> list[Expired]:
    """Tickets whose lease ran out, on any host: re-queue them (or fail them after
    `max_attempts`) and close their runs, in one transaction. A read first: no lock
    when none expired. On PostgreSQL one engine at a time does it (an advisory lock
    taken in the transaction; the others skip that round).

    `fence`, if given, is called in that transaction, before anything is changed,
    with the live VMs of the expired attempts (see `Fence`): what they still run is
    stopped before their tickets can run again. A ticket it names is left as it is
    this round (`stuck`, with why)."""
    if store.db.one(store.q.any_expired) is None:
        return []
    try:
        return _reclaim(store, None, fence)
    except StoreBusyError:
        raise
    except StoreError:  # a row the store will not let change (a trigger's RAISE, a
        pass  # constraint): the others one by one, that one left as it is
    expired: list[Expired] = []
    for row in store.db.all(store.q.expired_ids):
        ticket_id = int(row["id"])
        try:
            expired += _reclaim(store, ticket_id, fence)
        except StoreBusyError:
            raise
        except StoreError as exc:
            expired.append(Expired(ticket_id, "stuck", one_line(str(exc), 200), True))
    return expired


def _reclaim(store: TicketStore, only: int | None, fence: Fence | None) -> list[Expired]:
    """One reclaim transaction, run again from its start (fence and all) when PostgreSQL
    rolls it back to break a deadlock (`Database.atomic`)."""

    def once() -> list[Expired]:
        with store.db.checks_ignored():
            return _reclaim_once(store, only, fence)

    return store.db.atomic(once)


def _reclaim_once(store: TicketStore, only: int | None, fence: Fence | None) -> list[Expired]:
    expired: list[Expired] = []
    lock = store.db.one(store.q.reclaim_lock)
    if lock is None or not lock[0]:
        return []  # another engine is reclaiming right now
    left = {} if fence is None else _fence(store, only, fence)
    for ticket_id in sorted(_locked_elsewhere(store, only)):
        left.setdefault(ticket_id, LOCKED_ELSEWHERE)
    expired += [Expired(ticket_id, "stuck", why) for ticket_id, why in left.items()]
    rows = store.db.all(store.q.reclaim_expired, {"only": only, "skip": sorted(left)})
    for row in rows:
        store.close_open_runs(
            int(row["id"]), "failed", "lease expired: its engine did not renew it in time"
        )
        expired.append(Expired(int(row["id"]), str(row["status"])))
    return expired


def _locked_elsewhere(store: TicketStore, only: int | None) -> set[int]:
    """(In the reclaim's transaction.) Lock the rows the reclaim closes (the expired
    tickets' runs still `running` and their unfinished steps), passing over those another
    client holds locked (PostgreSQL's `SKIP LOCKED`): the tickets with such a row, left as
    they are this round. The reclaim then never waits for a row lock held elsewhere, on
    the engine's store thread where its lease renewals wait behind it. (SQLite: none;
    its write transaction holds the whole database.)"""
    args = {"only": only}
    held: set[int] = set()
    for every, lockable in (
        (store.q.expired_run_rows, store.q.lock_expired_run_rows),
        (store.q.expired_step_rows, store.q.lock_expired_step_rows),
    ):
        rows = store.db.all(every, args)
        if not rows:
            continue
        locked = {int(r[0]) for r in store.db.all(lockable, args)}
        held |= {int(r[1]) for r in rows if int(r[0]) not in locked}
    return held


def _fence(store: TicketStore, only: int | None, fence: Fence) -> dict[int, str]:
    """(In the reclaim's transaction.) Hand the expired attempts' live VMs to `fence`;
    the tickets to leave as they are this round, with why. At most `FENCED_VMS` VMs at
    a time: when there are more, the tickets from the last one's on wait for the next
    round (all of a ticket's VMs are fenced in one round)."""
    rows = store.db.all(store.q.expired_vms, {"only": only, "limit": FENCED_VMS})
    vms = [decode_record(r) for r in rows]
    left = fence(vms) if vms else {}
    if len(vms) >= FENCED_VMS:
        cut = int(vms[-1]["ticket_id"])
        for r in store.db.all(store.q.expired_ids):
            if int(r["id"]) >= cut:
                left.setdefault(int(r["id"]), "more VMs than one round stops; next round")
    return left


def one_line(text: str, width: int = 500) -> str:
    """`text` (an error's) on one line, its whitespace runs one space, cut at `width`."""
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[: width - 1] + "…"
