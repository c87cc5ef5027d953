"""Waking PostgreSQL engines: `LISTEN swarm_tickets`, on a connection of its own.

A trigger (store/sql/postgresql/tickets/0003) notifies `swarm_tickets` with the ticket's
id whenever a ticket becomes open, whoever wrote it (an engine, `swarm-engine`, psql).
The watcher sets `changed` on every notification. While the listening connection is down
it reconnects with backoff and sets `changed` every `FALLBACK_POLL` seconds instead
(polling), and once more when it is back, for what it may have missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg

from swarm_engine.store.queries import load

log = logging.getLogger(__name__)

CHANNEL = "swarm_tickets"
FALLBACK_POLL = 1.0
RECONNECT_MAX = 5.0
PROBE_TIMEOUT = 5.0
"""Seconds `any_open` (and closing its connection) waits for the server."""


class NotifyWatcher:
    """Sets `changed` when a ticket becomes open in the PostgreSQL store at `url`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.changed = asyncio.Event()
        self.mode = "listen"
        self.wanted = True  # notifications are cheap: they are taken either way
        self._probe: psycopg.AsyncConnection[Any] | None = None
        self._any_open = load("postgresql", "probe").any_open
        self._poller: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Nothing to do before `run` (kept for the watcher protocol)."""

    async def run(self) -> None:
        """The side task: listen, reconnecting (and polling meanwhile) when cut off."""
        delay = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=5
                )
            except psycopg.Error as exc:
                self._polling(f"cannot listen for new tickets ({exc}); polling instead")
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            try:
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._listening()
                    delay = 0.1
                    async for _ in conn.notifies():
                        self.changed.set()
            except psycopg.Error as exc:
                self._polling(f"lost the listening connection ({exc}); polling instead")
                await asyncio.sleep(delay)

    def _polling(self, why: str) -> None:
        if self.mode != "poll":
            log.warning(why)
        self.mode = "poll"
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())

    def _listening(self) -> None:
        self.mode = "listen"
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        self.changed.set()  # whatever was written while nobody listened

    async def _poll(self) -> None:
        while self.mode == "poll":
            self.changed.set()
            await asyncio.sleep(FALLBACK_POLL)

    async def any_open(self) -> bool:
        """Whether some ticket is open (True when that cannot be read right now, or
        within `PROBE_TIMEOUT`: a server that stopped answering mid-query, `SIGSTOP`, a
        dropped network, would hold the claim loop, and the engine's stop, for ever)."""
        try:
            return await asyncio.wait_for(self._read_open(), PROBE_TIMEOUT)
        except (psycopg.Error, TimeoutError):
            if self._probe is not None:
                probe, self._probe = self._probe, None
                with contextlib.suppress(psycopg.Error):
                    await asyncio.wait_for(probe.close(), PROBE_TIMEOUT)
            return True

    async def _read_open(self) -> bool:
        if self._probe is None or self._probe.closed:
            self._probe = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=5
            )
        cur = await self._probe.execute(self._any_open, {})
        return await cur.fetchone() is not None

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self._probe is not None:
            probe, self._probe = self._probe, None
            with contextlib.suppress(psycopg.Error, TimeoutError):
                await asyncio.wait_for(probe.close(), PROBE_TIMEOUT)
