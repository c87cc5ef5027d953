"""Waking the daemon when the ticket store changes, whoever wrote it.

PostgreSQL: `LISTEN/NOTIFY` (`store/notify.py`). SQLite: Linux inotify on the database's folder wakes the claim loop when any SQLite client writes
the database or its WAL. That event can arrive *before* the write is visible: a writer
appends its WAL frames (the event) and only then publishes the commit in shared memory,
which raises no event. So each file event also opens a short settle window in which
`PRAGMA data_version` (a read of shared memory, a few microseconds) is polled, every
millisecond at first, and the loop is woken again the moment the commit shows. An idle
engine gets no events and polls nothing. Where inotify is not available the daemon polls
`data_version` every 25 ms instead. The poll interval stays as the floor either way.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from swarm_engine.store.sqlite import ChangeProbe

if TYPE_CHECKING:
    from swarm_engine.config import Settings

log = logging.getLogger(__name__)

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
EVENT_HEADER = struct.Struct("iIII")
FALLBACK_POLL = 0.025
SETTLE_FAST = 0.020  # after a file event: poll every millisecond for this long,
SETTLE_SLOW = 0.250  # then every 10 ms until this long after the last event


class Watcher(Protocol):
    """What the claim loop waits on: `changed` is set when tickets may have become open."""

    changed: asyncio.Event
    mode: str
    wanted: bool
    """False while the claim loop could not use a change (every slot busy): the watcher
    may then skip work, and must report what it missed once it is wanted again."""

    def start(self) -> None: ...

    async def run(self) -> None:
        """The side task that sets `changed`; runs until cancelled."""
        ...

    async def any_open(self) -> bool:
        """Whether any ticket is open now (True when unsure), without the store thread."""
        ...

    async def aclose(self) -> None: ...


def open_watcher(settings: Settings) -> Watcher:
    """The watcher for the settings' ticket store."""
    target = settings.tickets_target
    if isinstance(target, str):
        from swarm_engine.store.notify import NotifyWatcher

        return NotifyWatcher(target)
    return StoreWatcher(target)


class StoreWatcher:
    """Sets `changed` whenever the database file (or its WAL) is written."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.changed = asyncio.Event()
        self._wanted = True
        self._probe: ChangeProbe | None = None
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()
        self._last_event = 0.0
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
            _, mask, _, length = EVENT_HEADER.unpack_from(data, offset)
            name = data[offset + EVENT_HEADER.size : offset + EVENT_HEADER.size + length]
            offset += EVENT_HEADER.size + length
            if name.rstrip(b"\0").startswith(prefix) or mask & IN_Q_OVERFLOW:
                self.changed.set()
                assert self._loop is not None
                self._last_event = self._loop.time()
                self._event.set()

    async def run(self) -> None:
        """The side task: sets `changed` when `data_version` moves, polling only in the
        settle window after a file event (inotify) or every 25 ms (fallback)."""
        loop = asyncio.get_running_loop()
        probe = ChangeProbe(self.db_path)
        try:
            last = probe.version()
            while True:
                if self.mode == "inotify":
                    since = loop.time() - self._last_event
                    if since >= SETTLE_SLOW or not self._wanted:
                        # idle, or every slot busy: sleep until the next file event or
                        # until wanted again (the claim loop reads the store itself then)
                        self._event.clear()
                        await self._event.wait()
                        continue
                    await asyncio.sleep(0.001 if since < SETTLE_FAST else 0.01)
                else:
                    await asyncio.sleep(FALLBACK_POLL)
                now = probe.version()  # None: unreadable for a moment; the next poll sees it
                if now is not None and now != last:
                    last = now
                    self.changed.set()
        finally:
            probe.close()

    @property
    def wanted(self) -> bool:
        return self._wanted

    @wanted.setter
    def wanted(self, value: bool) -> None:
        if value == self._wanted:
            return
        self._wanted = value
        if self._fd is not None and self._loop is not None:
            # not wanted: the file events (mostly this engine's own commits) wait in the
            # kernel's queue instead of waking the loop; wanted again, they are read at
            # once (a queue that overflowed meanwhile counts as a change too)
            if value:
                self._loop.add_reader(self._fd, self._on_events)
            else:
                self._loop.remove_reader(self._fd)
        if value:
            self._event.set()  # finish a settle window cut short while not wanted

    async def any_open(self) -> bool:
        """A read of the database on the loop (WAL readers never wait; about 20 µs)."""
        if self._probe is None:
            self._probe = ChangeProbe(self.db_path)
        return self._probe.any_open()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        if self._fd is not None:
            if self._loop is not None and self._wanted:
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None


def _inotify_watch(folder: Path) -> int | None:
    try:  # the C library this process already has (`find_library` would run `ldconfig`)
        libc = ctypes.CDLL(None, use_errno=True)
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
