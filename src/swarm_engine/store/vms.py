"""The `vms` table: every VM any engine booted, with enough to find and reap it."""

from __future__ import annotations

from typing import Any

from swarm_engine.store.db import Database
from swarm_engine.store.rows import decode_record
from swarm_engine.store.tickets import NOW

LIVE_STATES = ("booting", "ready", "busy", "destroying")


class VMStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record_boot(
        self,
        vm_id: str,
        *,
        backend: str,
        host: str,
        engine_id: str,
        owner_pid: int,
        memory_mb: int,
        vcpus: int,
    ) -> None:
        self.db.run(
            "INSERT INTO vms (id, backend, host, engine_id, owner_pid, memory_mb, vcpus)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (vm_id, backend, host, engine_id, owner_pid, memory_mb, vcpus),
        )

    def record_ready(
        self,
        vm_id: str,
        *,
        pid: int | None,
        workspace: str | None,
        socket_path: str | None,
        overlay_path: str | None,
        isolation: str | None = None,
    ) -> None:
        # isolation (issue 9): what the backend says isolates the VM (migration 0002)
        self.db.run(
            f"UPDATE vms SET state = 'ready', ready_at = {NOW}, pid = ?, workspace = ?,"
            " socket_path = ?, overlay_path = ?, isolation = ? WHERE id = ?",
            (pid, workspace, socket_path, overlay_path, isolation, vm_id),
        )

    def record_busy(self, vm_id: str, step_execution_id: int | None) -> None:
        self.db.run(
            "UPDATE vms SET state = 'busy', step_execution_id = ? WHERE id = ?",
            (step_execution_id, vm_id),
        )

    def record_destroyed(self, vm_id: str, error: str | None = None) -> None:
        self.db.run(
            f"UPDATE vms SET state = ?, destroyed_at = {NOW}, error = coalesce(?, error)"
            " WHERE id = ?",
            ("failed" if error else "destroyed", error, vm_id),
        )

    def live(self, host: str | None = None) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(LIVE_STATES))
        sql = f"SELECT * FROM vms WHERE state IN ({marks})"
        args: tuple[Any, ...] = LIVE_STATES
        if host is not None:
            sql += " AND host = ?"
            args = (*args, host)
        return [decode_record(r) for r in self.db.all(sql + " ORDER BY created_at", args)]

    def get(self, vm_id: str) -> dict[str, Any] | None:
        row = self.db.one("SELECT * FROM vms WHERE id = ?", (vm_id,))
        return decode_record(row) if row else None
