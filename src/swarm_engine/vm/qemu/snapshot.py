"""Snapshot restore: boot a template guest once, save it with QMP `migrate`, then start
every later guest from that state (`-incoming`) instead of booting a kernel.

A restored guest is a clone of the template: the host tells its agent so (`restored`),
and the agent mixes fresh host randomness into the kernel pool and sets the clock.
Only guests with the template's devices can be restored (same memory, vCPUs and image,
no network); anything else boots cold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from swarm_engine.errors import VMError

MIGRATE_TIMEOUT = 120.0
POLL = 0.02
WARM_UP = "true"
"""Run once (through the shell, like a step's string command) in a template guest before
it is saved, so every clone starts with the shell, the dynamic loader and libc in its page
cache and the command path's cgroup made: pages the clones share, instead of pages each
clone reads from the root filesystem and writes into memory of its own on its first
command (docs/qemu.md, "What a restored VM costs the host")."""
WARM_UP_TIMEOUT = 30.0


class QMP:
    """A minimal QMP client (JSON lines over QEMU's unix socket)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, path: Path | None = None, *, sock: socket.socket | None = None) -> QMP:
        """Connect to QEMU's QMP socket `path`, or speak QMP on the connected `sock`."""
        try:
            if sock is not None:
                reader, writer = await asyncio.open_unix_connection(sock=sock)
            else:
                reader, writer = await asyncio.open_unix_connection(str(path))
        except OSError as exc:
            raise VMError(f"cannot reach QMP at {path}: {exc}") from exc
        qmp = cls(reader, writer)
        try:
            await qmp._read()  # greeting
            await qmp.execute("qmp_capabilities")
        except BaseException:
            writer.close()
            raise
        return qmp

    async def _read(self) -> dict[str, Any]:
        line = await self._reader.readline()
        if not line:
            raise VMError("QMP connection closed")
        message: dict[str, Any] = json.loads(line)
        return message

    async def execute(self, command: str, **arguments: Any) -> Any:
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self._writer.write(json.dumps(request).encode() + b"\n")
        await self._writer.drain()
        while True:
            reply = await self._read()
            if "event" in reply:
                continue
            if "error" in reply:
                raise VMError(f"QMP {command}: {reply['error'].get('desc', reply['error'])}")
            return reply.get("return")

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, RuntimeError):
            await self._writer.wait_closed()


IGNORE_SHARED = [{"capability": "x-ignore-shared", "state": True}]
"""Leave shared (file-mapped) guest RAM out of the saved state: only device state is saved."""


async def save_state(qmp_socket: Path, dest: Path, *, mapped: bool = False) -> int:
    """Migrate the running guest behind `qmp_socket` into the file `dest`; returns ms.
    With `mapped`, guest RAM is already in the template's RAM file and is left out."""
    started = time.monotonic()
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    qmp = await QMP.connect(qmp_socket)
    try:
        if mapped:
            await qmp.execute("migrate-set-capabilities", capabilities=IGNORE_SHARED)
        await qmp.execute("migrate-set-parameters", **{"max-bandwidth": 8 * 1024**3})
        await qmp.execute("migrate", uri=f"exec:cat > {shlex.quote(str(tmp))}")
        deadline = started + MIGRATE_TIMEOUT
        while True:
            status = (await qmp.execute("query-migrate")).get("status")
            if status == "completed":
                break
            if status in ("failed", "cancelled") or time.monotonic() > deadline:
                raise VMError(f"saving the template VM failed (migration {status})")
            await asyncio.sleep(POLL)  # QMP has no blocking wait for a migration to end
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        await qmp.close()
    tmp.replace(dest)
    return int((time.monotonic() - started) * 1000)


async def start_restore(sock: socket.socket, state: Path) -> None:
    """Start restoring `state` in a clone waiting with `-incoming defer`, whose QMP monitor
    connected to `sock`; the clone runs on by itself once its device state is loaded."""
    qmp = await QMP.connect(sock=sock)
    try:
        await qmp.execute("migrate-set-capabilities", capabilities=IGNORE_SHARED)
        await qmp.execute("migrate-incoming", uri=f"exec:cat {shlex.quote(str(state))}")
    finally:
        await qmp.close()
