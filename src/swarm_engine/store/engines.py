"""The `engines` table: every engine (daemon or `run-ticket --wait`) and its heartbeat."""

from __future__ import annotations

import sqlite3
from typing import Any

from swarm_engine.store.tickets import NOW


class EngineStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def register(
        self, engine_id: str, *, kind: str, host: str, pid: int, max_vms: int, backend: str
    ) -> None:
        self.conn.execute(
            "INSERT INTO engines (id, kind, host, pid, max_vms, backend) VALUES (?, ?, ?, ?, ?, ?)",
            (engine_id, kind, host, pid, max_vms, backend),
        )

    def heartbeat(self, engine_id: str, busy_vms: int, state: str | None = None) -> None:
        self.conn.execute(
            f"UPDATE engines SET heartbeat_at = {NOW}, busy_vms = ?, state = coalesce(?, state)"
            " WHERE id = ?",
            (busy_vms, state, engine_id),
        )

    def stopped(self, engine_id: str, state: str = "stopped") -> None:
        self.conn.execute(
            f"UPDATE engines SET state = ?, stopped_at = {NOW}, busy_vms = 0 WHERE id = ?",
            (state, engine_id),
        )

    def running(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT * FROM engines WHERE state IN ('running','draining') ORDER BY started_at"
        )
        return [dict(r) for r in rows]
