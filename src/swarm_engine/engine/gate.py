"""The engine's way into the store: off the event loop, one call at a time, and patient.

SQLite calls block (up to the busy timeout while another writer holds the lock), so the
engine runs each store call on one dedicated worker thread: the event loop stays free to
pump output, renew leases and notice cancels, and the calls never interleave inside
another call's transaction. `retrying` turns a busy store into a delay: a transient
`StoreBusyError` is retried with capped exponential backoff for as long as the caller
says it still makes sense (typically: while the attempt's lease is held), and never past
the deadline an engine that is being stopped sets (`give_up_after`): from then on each call
waits for a lock only until that deadline (none at all once it has passed), so calls
queued on the one thread do not each wait out a whole busy timeout in turn.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from swarm_engine.errors import HostShortageError, StoreBusyError, StoreGoneError
from swarm_engine.osthreads import executor

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

FIRST_BACKOFF = 0.05
MAX_BACKOFF = 2.0
WARN_EVERY = 5.0


def store_said(exc: BaseException) -> str:
    """What the store (the database, or a trigger's `RAISE`) said in refusing a write, as
    one line of at most 300 characters: the driver's own message when there is one."""
    return " ".join(str(exc.__cause__ or exc).split())[:300]


class StoreGate:
    """Runs store calls on one worker thread. Close it after the last call."""

    def __init__(self, wait_at_most: Callable[[float | None], None] | None = None) -> None:
        self._executor = executor(1, "store")
        self._wait_at_most = wait_at_most
        """How to cap the lock wait of the store's next calls (`Database.wait_at_most`)."""
        self._last_warning = 0.0
        self._give_up_at: float | None = None
        """Monotonic time after which a busy store is no longer waited out (see
        `give_up_after`); None: never."""
        self.on_gone: Callable[[StoreGoneError], None] | None = None
        """Told (on the event loop) of each `StoreGoneError` a call raises, before the
        caller sees it: the store's file went away, so its owner stops (`EngineSession`)."""

    async def __call__(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        try:
            return await loop.run_in_executor(
                self._executor, functools.partial(self._bounded, call)
            )
        except StoreGoneError as exc:
            if self.on_gone is not None:
                self.on_gone(exc)
            raise

    def _bounded(self, call: Callable[[], T]) -> T:
        """On the store thread, as the call starts (a call queued before the deadline was
        set is bounded too): once a give-up deadline is set, the call waits for a lock
        only until it (not at all once it has passed: it is still tried, since a free
        store takes it at once)."""
        deadline = self._give_up_at
        if deadline is not None and self._wait_at_most is not None:
            self._wait_at_most(max(0.0, deadline - time.monotonic()))
        return call()

    async def retrying(
        self,
        fn: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Like calling it, but a busy store is retried until it answers. (Callers that
        must give up at some point pass a bound with `retrying_while`.)"""
        return await self.retrying_while(lambda: True, fn, *args, **kwargs)

    async def retrying_while(
        self,
        keep_trying: Callable[[], bool],
        fn: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Call `fn`; on `StoreBusyError` back off (50 ms doubling to 2 s) and call again
        while `keep_trying()` is true and the `give_up_after` deadline (if any) has not
        passed; then re-raise the last error."""
        delay = FIRST_BACKOFF
        while True:
            try:
                return await self(fn, *args, **kwargs)
            except StoreBusyError as exc:
                if not keep_trying() or self.given_up():
                    raise
                trouble = "host short" if isinstance(exc, HostShortageError) else "store busy"
                self.warn(f"{trouble}, retrying in {delay:.2f}s: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    def give_up_after(self, seconds: float) -> None:
        """The engine is being stopped: `seconds` from now on (an earlier deadline set
        before stays), no call waits out a busy store any more: each retrying call
        raises its last `StoreBusyError`, and every call started from now on waits for a
        lock only until the deadline, so the engine exits in bounded time. What was not
        written then is left to the reaper and the expired-lease reclaim."""
        deadline = time.monotonic() + seconds
        if self._give_up_at is None or deadline < self._give_up_at:
            self._give_up_at = deadline

    def given_up(self) -> bool:
        """Whether the `give_up_after` deadline has passed."""
        return self._give_up_at is not None and time.monotonic() >= self._give_up_at

    def warn(self, message: str) -> None:
        """Log a transient trouble at most every few seconds (a lock can last minutes)."""
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            log.warning("%s", message)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
