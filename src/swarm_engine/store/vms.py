"""The `vms` table: every VM any engine booted, with enough to find and reap it."""

from __future__ import annotations

import sqlite3
from typing import Any

from swarm_engine.store.tickets import NOW
from swarm_engine.vm.base import VMInfo

LIVE_STATES = ("booting", "ready", "busy", "destroying")


class VMStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

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
        self.conn.execute(
            "INSERT INTO vms (id, backend, host, engine_id, owner_pid, memory_mb, vcpus)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (vm_id, backend, host, engine_id, owner_pid, memory_mb, vcpus),
        )

    def record_ready(self, vm_id: str, info: VMInfo) -> None:
        self.conn.execute(
            f"UPDATE vms SET state = 'ready', ready_at = {NOW}, pid = ?, workspace = ?,"
            " socket_path = ?, overlay_path = ? WHERE id = ?",
            (info.pid, info.workspace, info.socket_path, info.overlay_path, vm_id),
        )

    def record_busy(self, vm_id: str, step_execution_id: int | None) -> None:
        self.conn.execute(
            "UPDATE vms SET state = 'busy', step_execution_id = ? WHERE id = ?",
            (step_execution_id, vm_id),
        )

    def record_destroyed(self, vm_id: str, error: str | None = None) -> None:
        self.conn.execute(
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
        return [dict(r) for r in self.conn.execute(sql + " ORDER BY created_at", args)]

    def get(self, vm_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM vms WHERE id = ?", (vm_id,)).fetchone()
        return dict(row) if row else None
