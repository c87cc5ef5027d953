"""The `engines` table: every engine (daemon or `run-ticket --wait`) and its heartbeat."""

from __future__ import annotations

from typing import Any

from swarm_engine.store.db import Database
from swarm_engine.store.rows import decode_record
from swarm_engine.store.tickets import NOW

BUSY_NOW = (
    "(SELECT count(*) FROM vms v WHERE v.engine_id = engines.id"
    " AND v.state IN ('booting','ready','busy'))"
)


class EngineStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def register(
        self, engine_id: str, *, kind: str, host: str, pid: int, max_vms: int, backend: str
    ) -> None:
        self.db.run(
            "INSERT INTO engines (id, kind, host, pid, max_vms, backend) VALUES (?, ?, ?, ?, ?, ?)",
            (engine_id, kind, host, pid, max_vms, backend),
        )

    def heartbeat(self, engine_id: str, busy_vms: int, state: str | None = None) -> None:
        self.db.run(
            f"UPDATE engines SET heartbeat_at = {NOW}, busy_vms = ?, state = coalesce(?, state)"
            " WHERE id = ?",
            (busy_vms, state, engine_id),
        )

    def stopped(self, engine_id: str, state: str = "stopped") -> None:
        self.db.run(
            f"UPDATE engines SET state = ?, stopped_at = {NOW}, busy_vms = 0 WHERE id = ?",
            (state, engine_id),
        )

    def running(self) -> list[dict[str, Any]]:
        """Engines not stopped, oldest first. `busy_vms` is live: the VMs each one holds
        now (from the `vms` table), not as of its last heartbeat."""
        rows = self.db.all(
            f"SELECT engines.*, {BUSY_NOW} AS busy_now FROM engines"
            " WHERE state IN ('running','draining') ORDER BY started_at"
        )
        out = []
        for r in rows:
            record = decode_record(r)
            record["busy_vms"] = record.pop("busy_now")
            out.append(record)
        return out

    def gone(self) -> set[str]:
        """Ids of engines recorded as stopped or dead."""
        rows = self.db.all("SELECT id FROM engines WHERE state IN ('stopped','dead')")
        return {str(r[0]) for r in rows}

    def find_running(self, pid: int, host: str) -> str | None:
        """The id of the running engine with this pid on this host, if any."""
        row = self.db.one(
            "SELECT id FROM engines WHERE pid = ? AND host = ? AND state = 'running'", (pid, host)
        )
        return str(row[0]) if row else None
