"""The `vms` table: every VM any engine booted, with enough to find and reap it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from swarm_engine.store.db import Database
from swarm_engine.store.queries import load
from swarm_engine.store.rows import decode_record
from swarm_engine.store.timestamps import format_ts

LIVE_STATES = ("booting", "ready", "busy", "destroying")


class VMStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.q = load(db.dialect, "vms")

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
            self.q.record_boot,
            {
                "id": vm_id,
                "backend": backend,
                "host": host,
                "engine_id": engine_id,
                "owner_pid": owner_pid,
                "memory_mb": memory_mb,
                "vcpus": vcpus,
            },
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
        busy_with: int | None = None,
    ) -> None:
        """The VM is up; `isolation` is what its backend says isolates it (issue 9). With
        `busy_with` (a step execution's id) it is recorded busy with that step at once, in
        the same statement (`ready_at` kept)."""
        args: dict[str, Any] = {
            "id": vm_id,
            "pid": pid,
            "workspace": workspace,
            "socket_path": socket_path,
            "overlay_path": overlay_path,
            "isolation": isolation,
        }
        if busy_with is None:
            self.db.run(self.q.record_ready, args)
        else:
            self.db.run(self.q.record_ready_busy, {**args, "step_execution_id": busy_with})

    def record_busy(self, vm_id: str, step_execution_id: int | None) -> None:
        self.db.run(self.q.record_busy, {"id": vm_id, "step_execution_id": step_execution_id})

    def record_destroyed(
        self, vm_id: str, error: str | None = None, at: datetime | None = None
    ) -> None:
        """The VM is gone (`failed` with `error`); `at`: when, if not now (a record
        written after the fact keeps the true time)."""
        self.db.run(self.q.record_destroyed, {"id": vm_id, "error": error, "at": format_ts(at)})

    def live(self, host: str | None = None) -> list[dict[str, Any]]:
        """VMs not yet destroyed, oldest first; only `host`'s when given."""
        return [decode_record(r) for r in self.db.all(self.q.live, {"host": host})]

    def live_counts(self) -> list[dict[str, Any]]:
        """Live VMs per host and state: `host`, `state`, `n` (finished VMs are not read)."""
        return [decode_record(r) for r in self.db.all(self.q.live_counts)]

    def get(self, vm_id: str) -> dict[str, Any] | None:
        row = self.db.one(self.q.get, {"id": vm_id})
        return decode_record(row) if row else None
