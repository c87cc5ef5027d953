"""Waking the daemon when the ticket store changes, whoever wrote it.

Linux inotify on the database's folder (the WAL file changes on every commit by any
SQLite client) wakes the claim loop within a millisecond or so. Where inotify is not
available the daemon falls back to polling `PRAGMA data_version` every 25 ms (cheap: it
reads shared memory, not the disk). The poll interval stays as the floor either way.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import sqlite3
import struct
from pathlib import Path

log = logging.getLogger(__name__)

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
EVENT_HEADER = struct.Struct("iIII")
FALLBACK_POLL = 0.025


class StoreWatcher:
    """Sets `changed` whenever the database file (or its WAL) is written."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.changed = asyncio.Event()
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.mode = "poll"

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        fd = _inotify_watch(self.db_path.parent)
        if fd is None:
            return
        self._fd = fd
        self._loop.add_reader(fd, self._on_events)
        self.mode = "inotify"

    def _on_events(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        prefix = self.db_path.name.encode()
        offset = 0
        while offset + EVENT_HEADER.size <= len(data):
            _, _, _, length = EVENT_HEADER.unpack_from(data, offset)
            name = data[offset + EVENT_HEADER.size : offset + EVENT_HEADER.size + length]
            offset += EVENT_HEADER.size + length
            if name.rstrip(b"\0").startswith(prefix):
                self.changed.set()

    async def poll_data_version(self) -> None:
        """The fallback: a side task that sets `changed` when data_version moves."""
        if self.mode == "inotify":
            return
        conn = sqlite3.connect(self.db_path, isolation_level=None)
        try:
            last = conn.execute("PRAGMA data_version").fetchone()[0]
            while True:
                await asyncio.sleep(FALLBACK_POLL)
                now = conn.execute("PRAGMA data_version").fetchone()[0]
                if now != last:
                    last = now
                    self.changed.set()
        finally:
            conn.close()

    def close(self) -> None:
        if self._fd is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None


def _inotify_watch(folder: Path) -> int | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    mask = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
    if libc.inotify_add_watch(fd, str(folder).encode(), mask) < 0:
        os.close(fd)
        log.info("inotify unavailable for %s; polling instead", folder)
        return None
    return int(fd)
