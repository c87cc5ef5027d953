"""Trigger firings: each cron slot or webhook delivery of a trigger makes one ticket, once."""

from __future__ import annotations

import json
from typing import Any

from swarm_engine.store.db import Database
from swarm_engine.store.queries import load
from swarm_engine.store.rows import decode_record
from swarm_engine.store.tickets import TicketStore


class TriggerStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.q = load(db.dialect, "triggers")
        self.tickets = TicketStore(db)

    def fire(
        self,
        trigger: str,
        key: str,
        *,
        workflow_id: str,
        title: str,
        inputs: dict[str, Any],
        priority: int = 0,
    ) -> tuple[int | None, bool]:
        """Make the ticket of firing (`trigger`, `key`) unless it was made already, in one
        transaction. Returns (ticket id, whether this call made it); the id is that of the
        earlier ticket on a repeat (None if that ticket was deleted since)."""

        def fire() -> tuple[int | None, bool]:  # only SQL: run again if rolled back (rerun.py)
            if self.db.one(self.q.claim_firing, {"trigger": trigger, "key": key}) is None:
                row = self.db.one(self.q.firing, {"trigger": trigger, "key": key})
                earlier = row["ticket_id"] if row is not None else None
                return (int(earlier) if earlier is not None else None), False
            ticket_id = self.tickets.create(
                title=title,
                workflow_id=workflow_id,
                inputs=json.loads(json.dumps(inputs)),
                priority=priority,
            )
            self.db.run(self.q.set_ticket, {"trigger": trigger, "key": key, "ticket_id": ticket_id})
            return ticket_id, True

        return self.db.atomic(fire)

    def recent(self, trigger: str, limit: int = 20) -> list[dict[str, Any]]:
        """The trigger's latest firings, newest first: `key`, `ticket_id`, `fired_at`."""
        rows = self.db.all(self.q.recent, {"trigger": trigger, "limit": limit})
        return [decode_record(r) for r in rows]
