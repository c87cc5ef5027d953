"""Live step logs: `step_logs` holds each step's log in chunks, written as the step runs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from swarm_engine.store.db import Database
from swarm_engine.store.queries import load


class LogStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.q = load(db.dialect, "logs")

    def append(self, step_execution_id: int, data: str) -> int | None:
        """Store one chunk of a step's log; its id, or None when the step's attempt no
        longer holds its ticket (nothing is stored then)."""
        row = self.db.one(self.q.append, {"step_execution_id": step_execution_id, "data": data})
        return int(row[0]) if row else None

    def after(
        self, step_execution_ids: Iterable[int], after: int = 0, limit: int = 500
    ) -> list[dict[str, Any]]:
        """Chunks of these steps with an id above `after`, oldest first: `id`,
        `step_execution_id`, `data` (text)."""
        ids = list(step_execution_ids)
        if not ids:
            return []
        rows = self.db.all(self.q.after, {"step_ids": ids, "after": after, "limit": limit})
        return [{"id": int(r[0]), "step_execution_id": int(r[1]), "data": str(r[2])} for r in rows]
