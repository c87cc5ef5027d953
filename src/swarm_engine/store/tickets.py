"""Ticket operations. Every claim or status change is one atomic statement.

Writes made on behalf of a run are fenced by the ticket's `attempt_id`: once a ticket
was reclaimed (new attempt) or cancelled, the old attempt's writes are refused.
Rows come back decoded (`swarm_engine.store.rows.Ticket`), never raw.
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from swarm_engine.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    StaleAttemptError,
    StoreIntegrityError,
    UsageError,
)
from swarm_engine.records import TERMINAL, TicketStatus, json_text, shown
from swarm_engine.store.db import Database
from swarm_engine.store.errortext import UNCOUNTED, not_run
from swarm_engine.store.ids import BEFORE_ALL as BEFORE_ALL
from swarm_engine.store.ids import MAX_ID as MAX_ID
from swarm_engine.store.ids import MIN_ID as MIN_ID
from swarm_engine.store.ids import first_after as first_after
from swarm_engine.store.passover import PassedOver
from swarm_engine.store.queries import load
from swarm_engine.store.reclaim import FENCED_VMS as FENCED_VMS
from swarm_engine.store.reclaim import Expired as Expired
from swarm_engine.store.reclaim import Fence as Fence
from swarm_engine.store.reclaim import one_line as _one_line
from swarm_engine.store.reclaim import reclaim_expired
from swarm_engine.store.rows import Decoder, Ticket, as_mapping, decode_record, decode_ticket

log = logging.getLogger(__name__)

LIVE = ("claimed", "running")
STATUS_NAMES = tuple(s.value for s in TicketStatus)
MAX_REJECTS_PER_CLAIM = 100
IGNORED_CLAIM = "the store ignored its claim without an error (a trigger's RAISE(IGNORE)?)"
"""Why an open, claimable ticket whose claim the store returned nothing for is not run."""
REOPENED = "cancelled (the ticket was reopened)"
"""The error of a run closed because its ticket was reopened (by the reopen itself when
its engine no longer runs, else by that engine once it has stopped the run)."""


def lease_ran_out(ticket: Ticket) -> bool:
    """A live ticket whose lease has expired (by this host's clock): a reclaim
    (`reclaim_expired`) may re-queue it (by the store's clock; it may still leave it live)."""
    expires = ticket.lease_expires_at
    return ticket.status in LIVE and expires is not None and expires <= datetime.now(UTC)


def spent_by_reclaim(ticket: Ticket) -> ConflictError:
    """Why a ticket whose lease ran out cannot run: the reclaim failed it, its attempts
    spent (its `error` says so)."""
    return ConflictError(
        f"ticket {ticket.id}: its lease ran out with no attempts left, and it was failed"
        f" ({shown(ticket.error or '', 200)}); 'swarm-engine ticket reopen {ticket.id}'"
        " queues it again"
    )


def not_claimable(ticket: Ticket, holder: str | None = None) -> ConflictError:
    """Why a ticket cannot be claimed, as the error to raise; `holder`: who holds a live
    one, if known better than by its `engine_id` (`store.engines.holder`)."""
    if ticket.status in LIVE:
        return ConflictError(
            f"ticket {ticket.id} is already {ticket.status} by"
            f" {holder or f'engine {ticket.engine_id}'}"
        )
    hint = " (use 'ticket reopen' first)" if ticket.status in TERMINAL else ""
    return ConflictError(f"ticket {ticket.id} is {ticket.status}{hint}")


def targetless_draft(ticket_id: int, field: str, doing: str) -> str:
    """The line for a draft whose `field` (`agent_id`, `workflow_id`) is empty, which only
    a draft may lack: what cannot be `doing` (`queued`, `run`, `cancelled`)."""
    return (
        f"ticket {ticket_id} is a draft with no {field} (only a draft may lack it): it"
        f" cannot be {doing}; set its {field}, or delete the draft"
    )


class TicketStore:
    """Tickets: reading them, users' writes, and engines' claims, leases and results.

    A ticket is never claimed while a run of it is still `running` (its attempt lost the
    ticket, e.g. another writer set it back to `open`, and that engine is still stopping
    it; or that engine is frozen): never two runs at once. Such a run is closed by its
    engine, by the lease reclaim, by a reopen (its engine gone), or with its engine when
    a daemon records that engine dead (`EngineStore.forget_silent`).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.q = load(db.dialect, "tickets")
        self.skipped = PassedOver()
        """Open tickets this store's engine cannot claim and could not fail either (the
        store ignored the claim and the failing, e.g. a trigger's RAISE(IGNORE)):
        `claim_next` passes them over and `any_unfinished` does not count them, for a
        while and at most so many (`store/passover.py`). (Changed on the store thread
        only, as `frozen`.)"""
        self.frozen = PassedOver()
        """Live tickets the store keeps live whatever this engine writes: one it ran to an
        end the store refused to record in any way (the runner's `_refused`), one whose
        expired lease the store refused to reclaim. `any_unfinished` does not count them
        while they stay claimed or running (for a while, as `skipped`)."""

    # -- reading ---------------------------------------------------------------------------
    def get(self, ticket_id: int) -> Ticket:
        row = self.db.one(self.q.get, {"id": ticket_id})
        if row is None:
            raise NotFoundError(f"ticket {ticket_id} does not exist")
        return decode_ticket(row)

    def list(self, status: str | None = None, limit: int = 100) -> builtins.list[Ticket]:
        if status is not None and status not in STATUS_NAMES:
            raise UsageError(f"unknown status {shown(status)} (one of: {', '.join(STATUS_NAMES)})")
        if status:
            rows = self.db.all(self.q.list_status, {"status": status, "limit": limit})
        else:
            rows = self.db.all(self.q.list, {"limit": limit})
        return [decode_ticket(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Tickets per status; a status no engine knows is counted under its own text."""
        return {str(r["status"]): int(r["n"]) for r in self.db.all(self.q.counts)}

    def events(
        self, ticket_id: int, *, before: int | None = None, limit: int = MAX_ID
    ) -> builtins.list[dict[str, Any]]:
        """The newest `limit` status events (default: all) of a ticket with an id below
        `before` (None: any), oldest first."""
        if before is not None and before <= MIN_ID:
            return []  # nothing is below the smallest id a row can hold
        args = {
            "id": ticket_id,
            "through": MAX_ID if before is None else before - 1,
            "limit": limit,
        }
        return [decode_record(r) for r in reversed(self.db.all(self.q.events, args))]

    def count_events(self, ticket_id: int) -> int:
        """How many status events a ticket has."""
        row = self.db.one(self.q.count_events, {"id": ticket_id})
        return int(row[0]) if row is not None else 0

    def page(
        self,
        *,
        statuses: Iterable[str] | None = None,
        agent: str | None = None,
        workflow: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> builtins.list[Ticket]:
        """Tickets newest first with an id below `before` (a keyset cursor: the last id of
        the previous page; None for the first page), at most `limit`. `statuses`: any of
        these (None or empty: all); `agent` / `workflow`: `name` matches every
        `name@version` too. Cost: about `limit` rows read per status asked for (the
        (status, id) index, or the primary key walked backwards), more when an agent or
        workflow filter matches few tickets."""
        args = {
            "agent": agent,
            "workflow": workflow,
            "through": MAX_ID if before is None else before - 1,
            "limit": limit,
        }
        if before is not None and before <= MIN_ID:
            return []  # nothing is below the smallest id a row can hold
        wanted = sorted(set(statuses or ()))
        if not wanted:
            return [decode_ticket(r) for r in self.db.all(self.q.page, args)]
        rows = [
            row
            for status in wanted
            for row in self.db.all(self.q.page_status, {**args, "status": status})
        ]
        rows.sort(key=lambda r: -int(r["id"]))
        return [decode_ticket(r) for r in rows[:limit]]

    def statuses_of(self, ticket_ids: Iterable[int]) -> dict[int, str]:
        """The status of each of these tickets that exists (stored text, even unknown)."""
        ids = builtins.list(ticket_ids)
        if not ids:
            return {}
        rows = self.db.all(self.q.statuses_of, {"ids": ids})
        return {int(r[0]): Decoder(r).text("status") for r in rows}

    def events_after(
        self, after: int = BEFORE_ALL, limit: int = 1000
    ) -> builtins.list[dict[str, Any]]:
        """For metrics: claims from the queue, and live tickets going back to open or to
        failed, with an event id above `after` (`BEFORE_ALL`: every one), oldest first: `id`, `ticket_id`, `at`,
        `old_status`, `new_status`, `attempt_id` (NULL over 1 KiB, its size in
        `attempt_id_bytes`), `note` (its first 200 characters), and for a claim
        `opened_at` (when the ticket last became open). Walks the primary key. Values as stored (`id` an
        int; the rest read leniently by the caller): a long history is read fast."""
        first = first_after(after)
        if first is None:
            return []
        rows = self.db.all(self.q.events_after, {"first": first, "limit": limit})
        return [as_mapping(r) for r in rows]

    def last_event_id(self) -> int:
        """The highest id in `ticket_events` (0 when empty)."""
        row = self.db.one(self.q.last_event_id)
        return int(row[0]) if row is not None and isinstance(row[0], int) else 0

    def any_unfinished(self) -> bool:
        """Whether any ticket is open, claimed or running (not one in `skipped` while
        open, nor one in `frozen` while live)."""
        args = {"skip": sorted(self.skipped), "frozen": sorted(self.frozen)}
        return self.db.one(self.q.any_unfinished, args) is not None

    # -- writing by users ------------------------------------------------------------------
    def create(
        self,
        *,
        title: str,
        description: str = "",
        agent_id: str | None = None,
        workflow_id: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        priority: int = 0,
        status: str = "open",
        max_attempts: int = 3,
        timeout_seconds: float | None = None,
    ) -> int:
        """A new ticket; returns its id. Raises `UsageError` for an impossible ticket,
        `StoreIntegrityError` when the database refuses a value."""
        if (agent_id is None) == (workflow_id is None):
            raise UsageError("a ticket needs exactly one of --agent or --workflow")
        if status not in ("draft", "open"):
            raise UsageError("a new ticket is 'draft' or 'open'")
        row = self.db.one(
            self.q.create,
            {
                "title": title,
                "description": description,
                "status": status,
                "mode": "workflow" if workflow_id else "single",
                "agent_id": agent_id,
                "workflow_id": workflow_id,
                "inputs": json.dumps(dict(inputs or {})),
                "priority": priority,
                "max_attempts": max_attempts,
                "timeout_seconds": timeout_seconds,
            },
        )
        assert row is not None
        return int(row[0])

    def open(self, ticket_id: int) -> Ticket:
        """draft -> open (queue it for an engine). `ConflictError` for a ticket that is no
        draft; `ConfigError` for a draft that names no agent (or no workflow, in workflow
        mode: a draft may lack it, an open ticket may not)."""
        try:
            row = self.db.one(self.q.open, {"id": ticket_id})
        except StoreIntegrityError:
            self._targetless(ticket_id, "queued")
            raise  # (another constraint, a trigger's: the store's own line)
        if row is None:
            t = self.get(ticket_id)
            raise ConflictError(f"ticket {ticket_id} is {t.status}; only a draft can be queued")
        return decode_ticket(row)

    def _targetless(self, ticket_id: int, doing: str) -> None:
        """(A draft's change the store refused.) `ConfigError` when the draft names no
        agent (or no workflow, in workflow mode), which only a draft may lack (the store's
        CHECK): no status change of it is taken, a cancel's neither."""
        draft = self.get(ticket_id)
        field = "workflow_id" if draft.execution_mode == "workflow" else "agent_id"
        if draft.status == "draft" and not getattr(draft, field):
            raise ConfigError(targetless_draft(ticket_id, field, doing)) from None

    def cancel(self, ticket_id: int) -> Ticket:
        try:
            row = self.db.one(self.q.cancel, {"id": ticket_id})
        except StoreIntegrityError:
            self._targetless(ticket_id, "cancelled")
            raise
        if row is None:
            t = self.get(ticket_id)
            raise ConflictError(f"ticket {ticket_id} is already {t.status}")
        return decode_ticket(row)

    def reopen(self, ticket_id: int) -> Ticket:
        """Put a finished ticket back in the queue. A run the old attempt left `running`
        is not touched: no engine claims the ticket until that run has ended (the claim
        guard). Its engine closes it (it stops the sandbox first); if that engine is gone,
        a daemon's round or `run-ticket` closes it once the engine has been silent for two
        leases (`EngineStore.close_silent_runs`), and never while its process lives on the
        closer's own host. So the old and the new attempt never run at once, whatever
        another writer records in the `engines` table."""
        row = self.db.one(self.q.reopen, {"id": ticket_id})
        if row is None:
            t = self.get(ticket_id)
            raise ConflictError(
                f"ticket {ticket_id} is {t.status}; only done, failed or cancelled reopen"
            )
        return decode_ticket(row)

    def cancel_many(self, ticket_ids: Iterable[int]) -> builtins.list[int]:
        """Cancel every one of these tickets that has not ended, in one statement; returns
        the ids it cancelled (the others are missing or already done, failed, cancelled)."""
        ids = builtins.list(ticket_ids)
        if not ids:
            return []
        return sorted(int(r[0]) for r in self.db.all(self.q.cancel_many, {"ids": ids}))

    def reopen_many(self, ticket_ids: Iterable[int]) -> builtins.list[int]:
        """Put every one of these tickets that ended (done, failed, cancelled) back in the
        queue, in one statement (runs left `running` are left, as by `reopen`); returns
        the ids it reopened."""
        ids = builtins.list(ticket_ids)
        if not ids:
            return []
        return sorted(int(r[0]) for r in self.db.all(self.q.reopen_many, {"ids": ids}))

    def close_open_runs(self, ticket_id: int, status: str, error: str) -> None:
        """Close every run (and its unfinished steps) of a ticket still marked running. A
        run the store keeps `running` (its close dropped by a trigger's RAISE(IGNORE)) is
        let go of instead if the store allows that: its `engine_id` cleared, so that no
        claim guard waits for the engine that ran it (only its error, if none, is set)."""
        args = {"id": ticket_id, "status": status, "error": error, "not_run": not_run(error)}
        self.db.run(self.q.close_open_steps, args)
        self.db.run(self.q.close_open_runs, args)
        self.db.run(self.q.let_go_open_runs, args)

    # -- writing by engines ----------------------------------------------------------------
    def claim(
        self,
        ticket_id: int,
        *,
        engine_id: str,
        attempt_id: str,
        lease_ttl: float,
        statuses: Iterable[str] = ("draft", "open"),
    ) -> Ticket:
        """Claim one ticket by id, or raise why not (missing, or not claimable)."""
        allowed = builtins.list(statuses)
        row = self.db.one(
            self.q.claim,
            {
                "id": ticket_id,
                "engine_id": engine_id,
                "attempt_id": attempt_id,
                "lease_ttl": float(lease_ttl),
                "statuses": allowed,
                "uncounted": UNCOUNTED,
            },
        )
        if row is None:
            ticket = self.get(ticket_id)
            if ticket.status == "open" and self._claimable(ticket_id, lease_ttl):
                raise ConflictError(f"ticket {ticket_id}: {IGNORED_CLAIM}")
            if ticket.status in allowed:
                holder = self.db.one(self.q.running_run_engine, {"id": ticket_id})
                engine = ticket.engine_id if holder is None else holder["engine_id"]
                named = "?" if engine is None else str(engine)[:200]  # (None: over 1 KiB)
                raise ConflictError(
                    f"ticket {ticket_id} still has a run going on engine {named};"
                    " try again once it has stopped"
                )
            raise not_claimable(ticket)
        return decode_ticket(row)

    def claim_next(
        self, *, engine_id: str, attempt_id: str, lease_ttl: float, limit: int = 1
    ) -> builtins.list[Ticket]:
        """Claim up to `limit` open tickets, best first (highest priority, then oldest),
        in one statement. Each gets the attempt id `<attempt_id>-<ticket id>`.

        A row that another client stored past a CHECK constraint cannot be claimed (the
        claim's UPDATE is refused): it is marked failed with the reason, and the claim is
        tried again.

        Tickets the read before the claim chose but the claim did not return, though they
        are still open and claimable, had their claim ignored by the store (a trigger's
        RAISE(IGNORE)): each is claimed on its own, and when that is ignored too it is
        failed with one line; when the failing is ignored as well it is added to
        `skipped`, which this store passes over for a while (`store/passover.py`).
        """
        skip = sorted(self.skipped)
        args: dict[str, Any] = {"engine_id": engine_id, "attempt_prefix": attempt_id,
                                "lease_ttl": float(lease_ttl), "limit": limit,
                                "skip": skip, "uncounted": UNCOUNTED}  # fmt: skip
        # a read first: when nothing is open (the common wake-up) no write lock is taken
        chosen = self.db.all(
            self.q.next_open, {"lease_ttl": float(lease_ttl), "limit": limit, "skip": skip}
        )
        if not chosen:
            return []
        claimed = self._claim_next(args)
        got = {t.id for t in claimed}
        for candidate in (int(r["id"]) for r in chosen):
            if len(claimed) >= limit:
                break
            if candidate not in got and candidate not in self.skipped:
                one = self._claim_ignored(candidate, engine_id, attempt_id, float(lease_ttl))
                claimed.extend(one)
        return sorted(claimed, key=lambda t: (-t.priority, t.id))

    def _claimable(self, ticket_id: int, lease_ttl: float) -> bool:
        args = {"id": ticket_id, "lease_ttl": float(lease_ttl)}
        return self.db.one(self.q.claimable, args) is not None

    def _claim_ignored(
        self, ticket_id: int, engine_id: str, attempt_id: str, lease_ttl: float
    ) -> builtins.list[Ticket]:
        """A ticket `claim_next` chose but did not claim: claimed on its own if it can be;
        if that is ignored while it stays claimable, failed (or else skipped)."""
        args = {"id": ticket_id, "engine_id": engine_id, "lease_ttl": lease_ttl,
                "attempt_id": f"{attempt_id}-{ticket_id}", "statuses": ["open"],
                "uncounted": UNCOUNTED}  # fmt: skip

        def claim() -> builtins.list[Ticket] | bool:  # only SQL: run again (store/rerun.py)
            """The ticket claimed; [] if it is gone; else whether it was failed."""
            row = self.db.one(self.q.claim, args)
            if row is not None:
                return [decode_ticket(row)]
            if not self._claimable(ticket_id, lease_ttl):
                return []  # taken by another engine meanwhile, or no longer open
            return self.reject(ticket_id, IGNORED_CLAIM)

        try:
            got = self.db.atomic(claim)
        except StoreIntegrityError as exc:  # the claim refused outright: as claim_next does
            if self._reject_or_pass_over(ticket_id, exc):
                return []
            got = False
        if isinstance(got, list):
            return got
        if got:
            log.warning("ticket %s: failed: %s", ticket_id, IGNORED_CLAIM)
            return []
        self.skipped.add(ticket_id)
        log.warning(
            "ticket %s: %s, and so was failing it: this engine passes it over",
            ticket_id,
            IGNORED_CLAIM,
        )
        return []

    def _claim_next(self, args: dict[str, Any]) -> builtins.list[Ticket]:
        lease_ttl = args["lease_ttl"]
        for _ in range(MAX_REJECTS_PER_CLAIM):
            try:
                rows = self.db.all(self.q.claim_next, args)
            except StoreIntegrityError as exc:
                if args["limit"] > 1:  # find the refused row one claim at a time
                    args = {**args, "limit": 1}
                    continue
                candidate = self.db.one(
                    self.q.next_open,
                    {"lease_ttl": float(lease_ttl), "limit": 1, "skip": args["skip"]},
                )
                if candidate is None:
                    return []
                self._reject_or_pass_over(int(candidate["id"]), exc)
                args = {**args, "skip": sorted(self.skipped)}  # (one it passed over)
                continue
            return [decode_ticket(r) for r in rows]
        return []

    def _reject_or_pass_over(self, ticket_id: int, refused: StoreIntegrityError) -> bool:
        """A ticket whose claim the store refused outright: failed with the reason, or,
        when failing it is refused too (a table every status change writes to, such as
        `ticket_events` with its ids spent), passed over by this store for a while (`skipped`), with
        one warning: the engine goes on either way (it never stops over a row). Returns
        whether it did either (not when the failing was ignored)."""
        try:
            return self.reject(ticket_id, f"the row breaks a constraint ({refused})")
        except StoreIntegrityError as exc:
            self.skipped.add(ticket_id)
            log.warning("ticket %s: cannot be claimed or failed: %s; this engine passes it over",
                        ticket_id, _one_line(str(exc)))  # fmt: skip
            return True

    def reject(self, ticket_id: int, reason: str) -> bool:
        """Fail an open ticket that cannot be run, without running it (and without
        rewriting what its writer stored). Returns whether this call failed it."""
        with self.db.checks_ignored():
            done = self.db.run(self.q.reject, {"id": ticket_id, "error": reason})  # (errortext)
        return done.rowcount == 1

    def mark_running(self, ticket_id: int, attempt_id: str) -> None:
        args = {"id": ticket_id, "attempt_id": attempt_id}
        self._fenced(self.db.run(self.q.mark_running, args).rowcount, ticket_id)

    def finish(
        self,
        ticket_id: int,
        attempt_id: str,
        *,
        status: str,
        result: Any = None,
        error: str | None = None,
    ) -> None:
        if status not in ("done", "failed", "open"):
            raise ValueError(status)
        args = {
            "id": ticket_id,
            "attempt_id": attempt_id,
            "status": status,
            "result": None if result is None else json_text(result),
            "error": error,
        }
        self._fenced(self.db.run(self.q.finish, args).rowcount, ticket_id)

    def fail_attempt(self, ticket_id: int, attempt_id: str, error: str) -> bool:
        """Last resort when a run could not even be recorded: fail the ticket (fenced,
        CHECKs ignored so a malformed row cannot keep it claimed). Returns whether it did."""

        def fail() -> bool:  # only SQL: run again if rolled back (store/rerun.py)
            with self.db.checks_ignored():
                args = {"id": ticket_id, "attempt_id": attempt_id, "error": error}
                if self.db.run(self.q.fail_attempt, args).rowcount != 1:
                    return False
                self.close_open_runs(ticket_id, "failed", error)
                return True

        return self.db.atomic(fail)

    def refuse_claimed(self, ticket_id: int, attempt_id: str, error: str) -> bool:
        """Fail a claimed ticket that must not run (it was open past its `max_attempts`, or
        its attempts were no count: the claim did not count one, `errortext.UNCOUNTED`),
        without a run, its `attempts` as stored (fenced; CHECKs ignored, as
        `fail_attempt`). Returns whether it did."""
        args = {"id": ticket_id, "attempt_id": attempt_id, "error": error}
        with self.db.checks_ignored():
            return self.db.run(self.q.refuse_claimed, args).rowcount == 1  # (errortext)

    def release(self, ticket_id: int, attempt_id: str) -> bool:
        """Put a claimed ticket whose run never started back in the queue, its attempt not
        counted (fenced; CHECKs ignored, as `fail_attempt`). Returns whether it did."""
        args = {"id": ticket_id, "attempt_id": attempt_id}
        with self.db.checks_ignored():
            return self.db.run(self.q.release, args).rowcount == 1

    def renew_leases(
        self, attempt_ids: Iterable[str], lease_ttl: float, engine_id: str
    ) -> set[str]:
        """Extend the leases of live attempts, each `lease_ttl` seconds from now, and write
        `engine_id` (the engine holding them) on their tickets again; returns those still
        held."""
        ids = builtins.list(attempt_ids)
        if not ids:
            return set()
        args = {"attempt_ids": ids, "lease_ttl": float(lease_ttl), "engine_id": engine_id}
        rows = self.db.all(self.q.renew_leases, args)
        return {str(r[0]) for r in rows}

    def held(self, attempt_ids: Iterable[str]) -> set[str]:
        """Which of these attempts still hold their ticket (a read; no lock taken)."""
        ids = builtins.list(attempt_ids)
        if not ids:
            return set()
        return {str(r[0]) for r in self.db.all(self.q.held, {"attempt_ids": ids})}

    def still_held(self, ticket_id: int, attempt_id: str) -> bool:
        args = {"id": ticket_id, "attempt_id": attempt_id}
        return self.db.one(self.q.still_held, args) is not None

    def reclaim_expired(self, fence: Fence | None = None) -> builtins.list[Expired]:
        """Tickets whose lease ran out, on any host: re-queued (or failed after
        `max_attempts`), their runs closed, in one transaction (store/reclaim.py)."""
        return reclaim_expired(self, fence)

    def _fenced(self, rowcount: int, ticket_id: int) -> None:
        if rowcount != 1:
            raise StaleAttemptError(
                f"ticket {ticket_id}: this attempt no longer holds the ticket (reclaimed or cancelled)"
            )
