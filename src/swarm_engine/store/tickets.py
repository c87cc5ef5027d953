"""Ticket operations. Every claim or status change is one atomic statement.

Writes made on behalf of a run are fenced by the ticket's `attempt_id`: once a ticket
was reclaimed (new attempt) or cancelled, the old attempt's writes are refused.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from swarm_engine.errors import ConflictError, NotFoundError, StaleAttemptError, UsageError
from swarm_engine.models import TERMINAL, TicketStatus

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"
LIVE = ("claimed", "running")

Ticket = dict[str, Any]


def row_to_ticket(row: sqlite3.Row) -> Ticket:
    ticket = dict(row)
    ticket["inputs"] = json.loads(ticket["inputs"]) if ticket.get("inputs") else {}
    if ticket.get("result") is not None:
        ticket["result"] = json.loads(ticket["result"])
    return ticket


def lease_modifier(seconds: float) -> str:
    return f"{seconds:+.3f} seconds"


def not_claimable(ticket: Ticket) -> ConflictError:
    """Why a ticket cannot be claimed, as the error to raise."""
    tid, status = ticket["id"], ticket["status"]
    if status in LIVE:
        return ConflictError(f"ticket {tid} is already {status} by engine {ticket['engine_id']}")
    hint = " (use 'ticket reopen' first)" if status in TERMINAL else ""
    return ConflictError(f"ticket {tid} is {status}{hint}")


class TicketStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    # -- reading ---------------------------------------------------------------------------
    def get(self, ticket_id: int) -> Ticket:
        row = self.conn.execute("SELECT * FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"ticket {ticket_id} does not exist")
        return row_to_ticket(row)

    def list(self, status: str | None = None, limit: int = 100) -> builtins.list[Ticket]:
        if status is not None and status not in {s.value for s in TicketStatus}:
            raise UsageError(f"unknown status {status!r}")
        sql = "SELECT * FROM tickets"
        args: tuple[Any, ...] = ()
        if status:
            sql += " WHERE status = ?"
            args = (status,)
        sql += " ORDER BY id DESC LIMIT ?"
        return [row_to_ticket(r) for r in self.conn.execute(sql, (*args, limit))]

    def counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT status, count(*) FROM tickets GROUP BY status")
        return {r[0]: r[1] for r in rows}

    def events(self, ticket_id: int) -> builtins.list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT * FROM ticket_events WHERE ticket_id = ? ORDER BY id", (ticket_id,)
        )
        return [dict(r) for r in rows]

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
        cur = self.conn.execute(
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
        assert cur.lastrowid is not None
        return cur.lastrowid

    def open(self, ticket_id: int) -> Ticket:
        """draft -> open (queue it for an engine)."""
        row = self.conn.execute(
            "UPDATE tickets SET status = 'open' WHERE id = ? AND status IN ('draft','open')"
            " RETURNING *",
            (ticket_id,),
        ).fetchone()
        if row is None:
            t = self.get(ticket_id)
            raise ConflictError(f"ticket {ticket_id} is {t['status']}; only a draft can be queued")
        return row_to_ticket(row)

    def cancel(self, ticket_id: int) -> Ticket:
        row = self.conn.execute(
            f"UPDATE tickets SET status = 'cancelled', error = 'cancelled by user',"
            f" completed_at = {NOW}, lease_expires_at = NULL"
            " WHERE id = ? AND status NOT IN ('done','failed','cancelled') RETURNING *",
            (ticket_id,),
        ).fetchone()
        if row is None:
            t = self.get(ticket_id)
            raise ConflictError(f"ticket {ticket_id} is already {t['status']}")
        return row_to_ticket(row)

    def reopen(self, ticket_id: int) -> Ticket:
        row = self.conn.execute(
            "UPDATE tickets SET status = 'open', error = NULL, result = NULL, attempts = 0,"
            " engine_id = NULL, attempt_id = NULL, lease_expires_at = NULL,"
            " claimed_at = NULL, started_at = NULL, completed_at = NULL"
            " WHERE id = ? AND status IN ('done','failed','cancelled') RETURNING *",
            (ticket_id,),
        ).fetchone()
        if row is None:
            t = self.get(ticket_id)
            raise ConflictError(
                f"ticket {ticket_id} is {t['status']}; only done, failed or cancelled reopen"
            )
        return row_to_ticket(row)

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
        row = self.conn.execute(
            f"UPDATE tickets SET status = 'claimed', engine_id = ?, attempt_id = ?,"
            f" attempts = attempts + 1, claimed_at = {NOW}, started_at = NULL,"
            f" completed_at = NULL, error = NULL, result = NULL,"
            f" lease_expires_at = strftime('%Y-%m-%dT%H:%M:%fZ','now', ?)"
            f" WHERE id = ? AND status IN ({marks}) RETURNING *",
            (engine_id, attempt_id, lease_modifier(lease_ttl), ticket_id, *allowed),
        ).fetchone()
        if row is None:
            raise not_claimable(self.get(ticket_id))
        return row_to_ticket(row)

    def claim_next(self, *, engine_id: str, attempt_id: str, lease_ttl: float) -> Ticket | None:
        """Claim the best open ticket (highest priority, then oldest), or None."""
        # a read first: when nothing is open (the common wake-up) no write lock is taken
        if (
            self.conn.execute("SELECT 1 FROM tickets WHERE status = 'open' LIMIT 1").fetchone()
            is None
        ):
            return None
        row = self.conn.execute(
            f"UPDATE tickets SET status = 'claimed', engine_id = ?, attempt_id = ?,"
            f" attempts = attempts + 1, claimed_at = {NOW}, started_at = NULL,"
            f" completed_at = NULL, error = NULL, result = NULL,"
            f" lease_expires_at = strftime('%Y-%m-%dT%H:%M:%fZ','now', ?)"
            f" WHERE id = (SELECT id FROM tickets WHERE status = 'open'"
            f"             ORDER BY priority DESC, id LIMIT 1)"
            f" AND status = 'open' RETURNING *",
            (engine_id, attempt_id, lease_modifier(lease_ttl)),
        ).fetchone()
        return row_to_ticket(row) if row else None

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
                None if result is None else json.dumps(result),
                error,
                status,
                ticket_id,
                attempt_id,
            ),
            ticket_id,
        )

    def renew_leases(self, attempt_ids: Iterable[str], lease_ttl: float) -> set[str]:
        """Extend the leases of live attempts; returns those still held."""
        ids = list(attempt_ids)
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            "UPDATE tickets SET lease_expires_at = strftime('%Y-%m-%dT%H:%M:%fZ','now', ?)"
            f" WHERE attempt_id IN ({marks}) AND status IN ('claimed','running')"
            " RETURNING attempt_id",
            (lease_modifier(lease_ttl), *ids),
        ).fetchall()
        return {r[0] for r in rows}

    def still_held(self, ticket_id: int, attempt_id: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM tickets WHERE id = ? AND attempt_id = ? AND status IN ('claimed','running')",
            (ticket_id, attempt_id),
        ).fetchone()
        return row is not None

    def _fenced(self, sql: str, args: tuple[Any, ...], ticket_id: int) -> None:
        if self.conn.execute(sql, args).rowcount != 1:
            raise StaleAttemptError(
                f"ticket {ticket_id}: this attempt no longer holds the ticket (reclaimed or cancelled)"
            )
