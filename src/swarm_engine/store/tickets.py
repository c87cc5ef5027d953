"""Ticket operations. Every claim or status change is one atomic statement.

Writes made on behalf of a run are fenced by the ticket's `attempt_id`: once a ticket
was reclaimed (new attempt) or cancelled, the old attempt's writes are refused.
Rows come back decoded (`swarm_engine.store.rows.Ticket`), never raw.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from swarm_engine.errors import (
    ConflictError,
    NotFoundError,
    StaleAttemptError,
    StoreIntegrityError,
    UsageError,
)
from swarm_engine.models import TERMINAL, TicketStatus
from swarm_engine.store.db import Database
from swarm_engine.store.rows import Ticket, decode_record, decode_ticket

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"
LIVE = ("claimed", "running")
STATUS_NAMES = tuple(s.value for s in TicketStatus)
CLAIM_SET = (
    "status = 'claimed', engine_id = ?, attempt_id = ?, attempts = attempts + 1,"
    f" claimed_at = {NOW}, started_at = NULL, completed_at = NULL, error = NULL,"
    " result = NULL, lease_expires_at = strftime('%Y-%m-%dT%H:%M:%fZ','now', ?)"
)
STILL_RUNNING = (
    "EXISTS (SELECT 1 FROM workflow_runs r JOIN engines e ON e.id = r.engine_id"
    " WHERE r.ticket_id = {ticket} AND r.status = 'running' AND e.state IN ('running','draining')"
    " AND e.heartbeat_at > strftime('%Y-%m-%dT%H:%M:%fZ','now', ?))"
)
"""A run of the ticket is still going on an engine that heartbeats (its attempt lost the
ticket, e.g. another writer set it back to `open`, and that engine is still stopping it).
Such a ticket is not claimed again until the run is closed: never two runs at once."""
NEXT_OPEN = (
    "SELECT id FROM tickets t WHERE status = 'open'"
    f" AND NOT {STILL_RUNNING.format(ticket='t.id')}"
    " ORDER BY priority DESC, id LIMIT 1"
)
MAX_REJECTS_PER_CLAIM = 100


def lease_modifier(seconds: float) -> str:
    return f"{seconds:+.3f} seconds"


def not_claimable(ticket: Ticket) -> ConflictError:
    """Why a ticket cannot be claimed, as the error to raise."""
    if ticket.status in LIVE:
        return ConflictError(
            f"ticket {ticket.id} is already {ticket.status} by engine {ticket.engine_id}"
        )
    hint = " (use 'ticket reopen' first)" if ticket.status in TERMINAL else ""
    return ConflictError(f"ticket {ticket.id} is {ticket.status}{hint}")


@dataclass(frozen=True, slots=True)
class Expired:
    """A ticket whose lease ran out, as the reclaimer left it."""

    ticket_id: int
    status: str  # 'open' (re-queued) or 'failed' (attempts used up)


class TicketStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- reading ---------------------------------------------------------------------------
    def get(self, ticket_id: int) -> Ticket:
        row = self.db.one("SELECT * FROM tickets WHERE id = ?", (ticket_id,))
        if row is None:
            raise NotFoundError(f"ticket {ticket_id} does not exist")
        return decode_ticket(row)

    def list(self, status: str | None = None, limit: int = 100) -> builtins.list[Ticket]:
        if status is not None and status not in STATUS_NAMES:
            raise UsageError(f"unknown status {status!r} (one of: {', '.join(STATUS_NAMES)})")
        sql = "SELECT * FROM tickets"
        args: tuple[Any, ...] = ()
        if status:
            sql += " WHERE status = ?"
            args = (status,)
        sql += " ORDER BY id DESC LIMIT ?"
        return [decode_ticket(r) for r in self.db.all(sql, (*args, limit))]

    def counts(self) -> dict[str, int]:
        """Tickets per status; a status no engine knows is counted under its own text."""
        rows = self.db.all("SELECT status, count(*) AS n FROM tickets GROUP BY status")
        return {str(r["status"]): int(r["n"]) for r in rows}

    def events(self, ticket_id: int) -> builtins.list[dict[str, Any]]:
        rows = self.db.all(
            "SELECT * FROM ticket_events WHERE ticket_id = ? ORDER BY id", (ticket_id,)
        )
        return [decode_record(r) for r in rows]

    def any_unfinished(self) -> bool:
        """Whether any ticket is open, claimed or running."""
        row = self.db.one(
            "SELECT 1 FROM tickets WHERE status IN ('open','claimed','running') LIMIT 1"
        )
        return row is not None

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
        if (agent_id is None) == (workflow_id is None):
            raise UsageError("a ticket needs exactly one of --agent or --workflow")
        if status not in ("draft", "open"):
            raise UsageError("a new ticket is 'draft' or 'open'")
        mode = "workflow" if workflow_id else "single"
        done = self.db.run(
            "INSERT INTO tickets (title, description, status, execution_mode, agent_id,"
            " workflow_id, inputs, priority, max_attempts, timeout_seconds)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                title,
                description,
                status,
                mode,
                agent_id,
                workflow_id,
                json.dumps(dict(inputs or {})),
                priority,
                max_attempts,
                timeout_seconds,
            ),
        )
        assert done.lastrowid is not None
        return done.lastrowid

    def open(self, ticket_id: int) -> Ticket:
        """draft -> open (queue it for an engine)."""
        row = self.db.one(
            "UPDATE tickets SET status = 'open' WHERE id = ? AND status IN ('draft','open')"
            " RETURNING *",
            (ticket_id,),
        )
        if row is None:
            t = self.get(ticket_id)
            raise ConflictError(f"ticket {ticket_id} is {t.status}; only a draft can be queued")
        return decode_ticket(row)

    def cancel(self, ticket_id: int) -> Ticket:
        row = self.db.one(
            f"UPDATE tickets SET status = 'cancelled', error = 'cancelled by user',"
            f" completed_at = {NOW}, lease_expires_at = NULL"
            " WHERE id = ? AND status NOT IN ('done','failed','cancelled') RETURNING *",
            (ticket_id,),
        )
        if row is None:
            t = self.get(ticket_id)
            raise ConflictError(f"ticket {ticket_id} is already {t.status}")
        return decode_ticket(row)

    def reopen(self, ticket_id: int) -> Ticket:
        """Put a finished ticket back in the queue. A run the old attempt left `running`
        (its engine had not yet noticed a cancel) is closed as cancelled, atomically."""
        with self.db.transaction():
            row = self.db.one(
                "UPDATE tickets SET status = 'open', error = NULL, result = NULL, attempts = 0,"
                " engine_id = NULL, attempt_id = NULL, lease_expires_at = NULL,"
                " claimed_at = NULL, started_at = NULL, completed_at = NULL"
                " WHERE id = ? AND status IN ('done','failed','cancelled') RETURNING *",
                (ticket_id,),
            )
            if row is None:
                t = self.get(ticket_id)
                raise ConflictError(
                    f"ticket {ticket_id} is {t.status}; only done, failed or cancelled reopen"
                )
            self.close_open_runs(ticket_id, "cancelled", "cancelled (the ticket was reopened)")
        return decode_ticket(row)

    def close_open_runs(self, ticket_id: int, status: str, error: str) -> None:
        """Close every run (and its unfinished steps) of a ticket still marked running."""
        self.db.run(
            f"UPDATE step_executions SET status = ?, error = coalesce(error, ?),"
            f" completed_at = {NOW} WHERE status IN ('queued','running') AND run_id IN"
            " (SELECT id FROM workflow_runs WHERE ticket_id = ? AND status = 'running')",
            (status, error, ticket_id),
        )
        self.db.run(
            f"UPDATE workflow_runs SET status = ?, error = coalesce(error, ?),"
            f" completed_at = {NOW} WHERE ticket_id = ? AND status = 'running'",
            (status, error, ticket_id),
        )

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
        allowed = tuple(statuses)
        marks = ",".join("?" * len(allowed))
        row = self.db.one(
            f"UPDATE tickets SET {CLAIM_SET} WHERE id = ? AND status IN ({marks})"
            f" AND NOT {STILL_RUNNING.format(ticket='tickets.id')} RETURNING *",
            (
                engine_id,
                attempt_id,
                lease_modifier(lease_ttl),
                ticket_id,
                *allowed,
                lease_modifier(-lease_ttl),
            ),
        )
        if row is None:
            ticket = self.get(ticket_id)
            if ticket.status in allowed:
                raise ConflictError(
                    f"ticket {ticket_id} still has a run going on engine {ticket.engine_id};"
                    " try again once it has stopped"
                )
            raise not_claimable(ticket)
        return decode_ticket(row)

    def claim_next(self, *, engine_id: str, attempt_id: str, lease_ttl: float) -> Ticket | None:
        """Claim the best open ticket (highest priority, then oldest), or None.

        A row that another client stored past a CHECK constraint cannot be claimed (the
        claim's UPDATE is refused): it is marked failed with the reason, and the next
        ticket is tried.
        """
        alive = lease_modifier(-lease_ttl)
        # a read first: when nothing is open (the common wake-up) no write lock is taken
        if self.db.one(NEXT_OPEN, (alive,)) is None:
            return None
        for _ in range(MAX_REJECTS_PER_CLAIM):
            try:
                row = self.db.one(
                    f"UPDATE tickets SET {CLAIM_SET} WHERE id = ({NEXT_OPEN})"
                    " AND status = 'open' RETURNING *",
                    (engine_id, attempt_id, lease_modifier(lease_ttl), alive),
                )
            except StoreIntegrityError as exc:
                candidate = self.db.one(NEXT_OPEN, (alive,))
                if candidate is None:
                    return None
                self.reject(int(candidate["id"]), f"the row breaks a constraint ({exc})")
                continue
            return decode_ticket(row) if row else None
        return None

    def reject(self, ticket_id: int, reason: str) -> bool:
        """Fail an open ticket that cannot be run, without running it (and without
        rewriting what its writer stored). Returns whether this call failed it."""
        with self.db.checks_ignored():
            done = self.db.run(
                f"UPDATE tickets SET status = 'failed', error = ?, completed_at = {NOW},"
                " lease_expires_at = NULL WHERE id = ? AND status = 'open'",
                (_one_line(reason), ticket_id),
            )
        return done.rowcount == 1

    def mark_running(self, ticket_id: int, attempt_id: str) -> None:
        self._fenced(
            f"UPDATE tickets SET status = 'running', started_at = {NOW}"
            " WHERE id = ? AND attempt_id = ? AND status = 'claimed'",
            (ticket_id, attempt_id),
            ticket_id,
        )

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
        self._fenced(
            f"UPDATE tickets SET status = ?, result = ?, error = ?,"
            f" completed_at = CASE WHEN ? = 'open' THEN NULL ELSE {NOW} END,"
            " lease_expires_at = NULL"
            " WHERE id = ? AND attempt_id = ? AND status IN ('claimed','running')",
            (
                status,
                None if result is None else json.dumps(result, default=str),
                error,
                status,
                ticket_id,
                attempt_id,
            ),
            ticket_id,
        )

    def fail_attempt(self, ticket_id: int, attempt_id: str, error: str) -> bool:
        """Last resort when a run could not even be recorded: fail the ticket (fenced,
        CHECKs ignored so a malformed row cannot keep it claimed). Returns whether it did."""
        with self.db.transaction(), self.db.checks_ignored():
            done = self.db.run(
                f"UPDATE tickets SET status = 'failed', error = ?, completed_at = {NOW},"
                " lease_expires_at = NULL"
                " WHERE id = ? AND attempt_id = ? AND status IN ('claimed','running')",
                (_one_line(error), ticket_id, attempt_id),
            )
            if done.rowcount == 1:
                self.close_open_runs(ticket_id, "failed", _one_line(error))
        return done.rowcount == 1

    def renew_leases(self, attempt_ids: Iterable[str], lease_ttl: float) -> set[str]:
        """Extend the leases of live attempts; returns those still held."""
        ids = builtins.list(attempt_ids)
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        rows = self.db.all(
            "UPDATE tickets SET lease_expires_at = strftime('%Y-%m-%dT%H:%M:%fZ','now', ?)"
            f" WHERE attempt_id IN ({marks}) AND status IN ('claimed','running')"
            " RETURNING attempt_id",
            (lease_modifier(lease_ttl), *ids),
        )
        return {str(r[0]) for r in rows}

    def held(self, attempt_ids: Iterable[str]) -> set[str]:
        """Which of these attempts still hold their ticket (a read; no lock taken)."""
        ids = builtins.list(attempt_ids)
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        rows = self.db.all(
            f"SELECT attempt_id FROM tickets WHERE attempt_id IN ({marks})"
            " AND status IN ('claimed','running')",
            ids,
        )
        return {str(r[0]) for r in rows}

    def still_held(self, ticket_id: int, attempt_id: str) -> bool:
        row = self.db.one(
            "SELECT 1 FROM tickets WHERE id = ? AND attempt_id = ? AND status IN ('claimed','running')",
            (ticket_id, attempt_id),
        )
        return row is not None

    def reclaim_expired(self) -> builtins.list[Expired]:
        """Tickets whose lease ran out: re-queue them (or fail them after `max_attempts`)
        and close their runs, in one transaction. A read first: no lock when none expired."""
        # leases are read as instants (any form SQLite accepts: offsets, a space for the
        # T, unix seconds); a live row with no readable lease (NULL, a blob, 'zzz': written
        # by hand) has no holder that could renew it, so it counts as expired too
        lease = "julianday(lease_expires_at, 'auto')"
        due = (
            f"status IN ('claimed','running') AND (typeof(lease_expires_at) NOT IN"
            f" ('text','integer','real') OR {lease} IS NULL OR {lease} < julianday('now'))"
        )
        if self.db.one(f"SELECT 1 FROM tickets WHERE {due} LIMIT 1") is None:
            return []
        expired: builtins.list[Expired] = []
        with self.db.transaction(), self.db.checks_ignored():
            rows = self.db.all(
                "UPDATE tickets SET"
                " status = CASE WHEN attempts < max_attempts THEN 'open' ELSE 'failed' END,"
                " error = CASE WHEN attempts < max_attempts THEN NULL"
                "   ELSE 'lease expired after ' || attempts || ' attempt(s); engine '"
                "        || coalesce(engine_id,'?') || ' did not renew it in time' END,"
                f" completed_at = CASE WHEN attempts < max_attempts THEN NULL ELSE {NOW} END,"
                f" lease_expires_at = NULL, attempt_id = NULL WHERE {due}"
                " RETURNING id, status"
            )
            for row in rows:
                self.close_open_runs(
                    int(row["id"]), "failed", "lease expired: its engine did not renew it in time"
                )
                expired.append(Expired(int(row["id"]), str(row["status"])))
        return expired

    def _fenced(self, sql: str, args: tuple[Any, ...], ticket_id: int) -> None:
        if self.db.run(sql, args).rowcount != 1:
            raise StaleAttemptError(
                f"ticket {ticket_id}: this attempt no longer holds the ticket (reclaimed or cancelled)"
            )


def _one_line(text: str, width: int = 500) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[: width - 1] + "…"
