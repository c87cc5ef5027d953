"""The engine's way into the store: off the event loop, one call at a time, and patient.

SQLite calls block (up to the busy timeout while another writer holds the lock), so the
engine runs each store call on one dedicated worker thread: the event loop stays free to
pump output, renew leases and notice cancels, and the calls never interleave inside
another call's transaction. `retrying` turns a busy store into a delay: a transient
`StoreBusyError` is retried with capped exponential backoff for as long as the caller
says it still makes sense (typically: while the attempt's lease is held), and never past
the deadline an engine that is being stopped sets: one `lease_ttl` without an answer from
the store once it is told to stop (`stopping`; an answer then is a write the store took:
reads go through while another client holds the write lock), one `lease_ttl` after its
abort (`give_up_after`). From then on each call waits for a lock only until that deadline (none
at all once it has passed), so calls queued on the one thread do not each wait out a
whole busy timeout in turn, and a call that never returns (a server paused or cut off
mid-query) is no longer waited for: the engine exits in bounded time however the store
fails (docs/engine.md, "A store that does not answer while the engine stops"). The same
give-up ends `run-ticket --wait` once its store has been silent for a whole `lease_ttl`
(`given_up_when_silent`): its ticket's lease has run out unrenewed by then.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, ParamSpec, TypeVar

from swarm_engine.errors import HostShortageError, StoreBusyError, StoreGoneError
from swarm_engine.osthreads import OneThread

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

FIRST_BACKOFF = 0.05
MAX_BACKOFF = 2.0
WARN_EVERY = 5.0
LAST_TRY = 1.0
"""Seconds a call started after the store was given up is waited for (it is still tried:
a store that answers again takes it at once)."""
SILENCE_TICK = 0.1
ROW_LOCK_SLICE = 1.5
"""Seconds an engine's store call on PostgreSQL waits at most for a row lock another
client holds (a quarter of `heartbeat_interval` when that is less, so that a few calls
waiting in turn on the one store thread, a run's write and its log's, say, still let the
lease renewal through well within its lease; never past the busy timeout) before it is
busy and, if its caller retries, tried again after a backoff (`StoreGate`'s
`lock_slice`). As the lease-critical transactions' own bound (the SQL
`lock_wait`, `reclaim_lock`): longer than the server's deadlock check, 1 s by default."""
"""How often `given_up_when_silent` looks at the store's silence (no store call: a clock)."""


def store_said(exc: BaseException) -> str:
    """What the store (the database, or a trigger's `RAISE`) said in refusing a write, as
    one line of at most 300 characters: the driver's own message when there is one."""
    return " ".join(str(exc.__cause__ or exc).split())[:300]


class StoreGate:
    """Runs store calls on one worker thread. Close it after the last call."""

    def __init__(
        self,
        wait_at_most: Callable[[float | None], None] | None = None,
        writes: Callable[[], int] | None = None,
        lock_slice: float | None = None,
    ) -> None:
        self._thread = OneThread("store")
        self._wait_at_most = wait_at_most
        """How to cap the lock wait of the store's next calls (`Database.wait_at_most`)."""
        self._slice = lock_slice
        """Seconds each call waits at most for a row lock another client holds (None: the
        busy timeout): then it is busy, and a caller that retries tries again after a
        backoff, while the calls queued behind it on the one thread (the lease renewals)
        go first. PostgreSQL's row locks (`EngineSession`: `ROW_LOCK_SLICE`): one row held
        locked elsewhere then delays only the calls that write it."""
        self._writes = writes
        """How many writes the store has taken so far (`Database.writes`): once stopping,
        only a call during which it grew is an answer. None: every call that ends
        otherwise than busy is one (calls that are not on a database)."""
        self._last_warning = 0.0
        self._give_up_at: float | None = None
        """Monotonic time after which a busy store is no longer waited out (see
        `give_up_after`); None: never."""
        self._grace: float | None = None
        """Seconds without an answer after which a stopping engine gives its store up
        (`stopping`); None: not stopping."""
        self._stopped_at = 0.0
        self._gave_up = False
        self.answered_at = time.monotonic()
        """When the store last answered (monotonic): the start of its silence, if any.
        Until the stop, a call that ended otherwise than busy, or a call asked of a store
        that owed no answer; from the stop on, only a call that got a write through."""
        self.trouble: str | None = None
        """What the last busy (or unanswered) call since the store's last answer said,
        for the line of a stop given up."""
        self._owed_since: float | None = None
        """When (monotonic) the first call that went busy since the store last took a
        write started: from then on a read the store answers (it goes through while
        another client holds the write lock) does not end its silence (`silent_for`)."""
        self._owed_said: str | None = None
        """What the last busy call since then said."""
        self._pending: set[Future[Any]] = set()
        """Calls handed to the thread and not ended yet."""
        self._news: asyncio.Future[None] | None = None
        """Resolved when a give-up deadline is set or brought forward (`_tell`)."""
        self.on_gone: Callable[[StoreGoneError], None] | None = None
        """Told (on the event loop) of each `StoreGoneError` a call raises, before the
        caller sees it: the store's file went away, so its owner stops (`EngineSession`)."""

    async def __call__(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._call(False, functools.partial(fn, *args, **kwargs))

    async def first(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Like calling it, but ahead of every call queued on the thread: it waits only
        for the call under way (the lease renewals, which must not wait behind the tries
        of the calls that wait in turn for a row another client holds)."""
        return await self._call(True, functools.partial(fn, *args, **kwargs))

    async def _call(self, first: bool, call: Callable[[], T]) -> T:
        if self._pending and self.given_up():  # the thread still waits on a store given up
            raise self._unanswered()
        if not self._pending and self.trouble is None and self._grace is None:
            self.answered_at = time.monotonic()  # the store owes nothing: its silence
            # counts from this call on (once stopping, from the stop or its last write)
        submit = self._thread.submit_first if first else self._thread.submit
        job = submit(self._bounded, call)
        self._pending.add(job)
        job.add_done_callback(self._pending.discard)
        try:
            return await self._outcome(job)
        except StoreGoneError as exc:
            if self.on_gone is not None:
                self.on_gone(exc)
            raise

    async def _outcome(self, job: Future[T]) -> T:
        """`job`'s result, waited for while no give-up deadline has passed (a call started
        after it gets `LAST_TRY` seconds); then `StoreBusyError`, the job left to end on
        the thread as it will (a server that stopped answering mid-query: never)."""
        started = time.monotonic()
        waiting = asyncio.wrap_future(job)
        try:
            while True:
                deadline = self.deadline()
                timeout = None
                if deadline is not None:
                    timeout = max(deadline, started + LAST_TRY) - time.monotonic()
                    if timeout <= 0:
                        break
                either: set[asyncio.Future[Any]] = {waiting, self._news_future()}
                await asyncio.wait(either, timeout=timeout, return_when=FIRST_COMPLETED)
                if waiting.done():
                    return waiting.result()
        except asyncio.CancelledError:
            waiting.cancel()
            raise
        waiting.cancel()
        self._gave_up = True
        if self.trouble is None:
            self.trouble = f"a call still unanswered after {time.monotonic() - started:.0f}s"
        raise self._unanswered()

    def _news_future(self) -> asyncio.Future[None]:
        if self._news is None or self._news.done():
            self._news = asyncio.get_running_loop().create_future()
        return self._news

    def _tell(self) -> None:
        """A give-up deadline was set or brought forward: waits look at it again."""
        if self._news is not None and not self._news.done():
            self._news.set_result(None)

    def _unanswered(self) -> StoreBusyError:
        silent = time.monotonic() - self.answered_at
        return StoreBusyError(f"the store has not answered for {silent:.0f}s")

    def _bounded(self, call: Callable[[], T]) -> T:
        """On the store thread, as the call starts (a call queued before the deadline was
        set is bounded too): once a give-up deadline is set, the call waits for a lock
        only until it (not at all once it has passed: it is still tried, since a free
        store takes it at once). What is an answer: `_ended`."""
        cap, deadline = self._slice, self.deadline()
        if deadline is not None:
            left = max(0.0, deadline - time.monotonic())
            cap = left if cap is None else min(cap, left)
        if cap is not None and self._wait_at_most is not None:
            self._wait_at_most(cap)
        writes = self._writes() if self._writes is not None else 0
        started = time.monotonic()
        try:
            result = call()
        except StoreBusyError as exc:
            self._ended(writes, str(exc), started)
            raise
        except BaseException:
            self._ended(writes, None, started)
            raise
        self._ended(writes, None, started)
        return result

    def _ended(self, writes_before: int, busy: str | None, started: float) -> None:
        """A call ended, busy (`busy` says how) or not. Until the stop, a call that
        ended otherwise than busy is an answer. Once stopping, only a call during which
        the store took a write is (even one that then went busy): a read goes through
        while another client holds the write lock, so it shows nothing of whether the
        stop can be recorded, and must not keep the stop's bound moving."""
        counted = self._writes  # (None: no count of writes, every answer is one)
        wrote = busy is None if counted is None else counted() != writes_before
        if wrote:
            self._owed_since, self._owed_said = None, None
        elif busy is not None:  # (a write, or a read, that waited for a lock in vain)
            self._owed_said = busy
            if self._owed_since is None:
                self._owed_since = started
        if self._grace is not None:
            if wrote:
                self.answered_at = time.monotonic()
            if busy is not None or wrote:  # (a read leaves the last busy call's word)
                self.trouble = busy
        elif busy is None:
            self.answered_at = time.monotonic()
            self.trouble = None
        else:
            self.trouble = busy

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

    def stopping(self, grace: float) -> None:
        """The engine is told to stop: from now on a store that goes `grace` seconds
        without answering (busy, unreachable, or a call that never returns), counted from
        now or from its last answer if later, is given up: each retrying call raises its
        last `StoreBusyError`, a call under way is no longer waited for, and every later
        call is tried once (`LAST_TRY`), so the engine exits in bounded time. From now
        on only a write the store takes is an answer (`_ended`): a store whose write lock
        another client holds is given up `grace` after the stop, however many reads it
        answers meanwhile."""
        if self._grace is None:
            self._grace = grace
            self._stopped_at = time.monotonic()
            self._tell()

    def silent_for(self) -> float:
        """Seconds the store has gone without answering while a call waits on it (a call
        under way, a call that never returns included, or one that ended busy since its
        last answer), counted as `deadline` counts them (once stopping, from the stop or
        its last answer, if later); 0 when it owes no answer. A call that went busy
        counts until the store takes a write, as once stopping: reads it answers
        meanwhile (a SQLite store another client holds the write lock of) do not end
        the silence of a lease that cannot be renewed."""
        now = time.monotonic()
        silent = 0.0
        if self._pending or self.trouble is not None:
            since = self.answered_at
            if self._grace is not None:
                since = max(since, self._stopped_at)
            silent = now - since
        if self._owed_since is not None:
            silent = max(silent, now - self._owed_since)
        return max(0.0, silent)

    async def given_up_when_silent(self, grace: float) -> tuple[float, str]:
        """Wait until the store has gone `grace` seconds without answering while a call
        waits on it (`silent_for`); then give it up at once, as a stopping engine's is at
        its deadline (`give_up_after`: every call waiting on it, one that never returns
        included, ends `StoreBusyError`, and each later call is tried once). Returns the
        seconds it was silent and what it last said (300 characters at most). A store
        silent for less is a delay. (`run-ticket --wait`: its ticket's lease has run out
        unrenewed by then.)"""
        while True:
            silent = self.silent_for()
            if silent >= grace:
                said = (
                    self.trouble
                    or self._owed_said
                    or f"a call still unanswered after {silent:.0f}s"
                )
                self.give_up_after(0)
                self.given_up()
                return silent, said[:300]
            await asyncio.sleep(min(SILENCE_TICK, grace - silent))

    def give_up_after(self, seconds: float) -> None:
        """The engine aborts: `seconds` from now on (an earlier deadline, this one's or
        `stopping`'s, stays), no call waits out a busy store any more: each retrying call
        raises its last `StoreBusyError`, and every call started from now on waits for a
        lock only until the deadline, so the engine exits in bounded time. What was not
        written then is left to the reaper and the expired-lease reclaim."""
        deadline = time.monotonic() + seconds
        if self._give_up_at is None or deadline < self._give_up_at:
            self._give_up_at = deadline
            self._tell()

    def deadline(self) -> float | None:
        """When (monotonic) the store is given up, as things stand; None: never."""
        at = None
        if self._grace is not None:
            at = max(self._stopped_at, self.answered_at) + self._grace
        if self._give_up_at is not None:
            at = self._give_up_at if at is None else min(at, self._give_up_at)
        return at

    def given_up(self) -> bool:
        """Whether the store was given up (a deadline passed: for good, even if it answers
        again later, so the stop stays bounded)."""
        if not self._gave_up:
            deadline = self.deadline()
            self._gave_up = deadline is not None and time.monotonic() >= deadline
        return self._gave_up

    def warn(self, message: str) -> None:
        """Log a transient trouble at most every few seconds (a lock can last minutes);
        none once the store was given up (no delay any more: the owner's last line says
        what that left)."""
        if self._gave_up:
            return
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            log.warning("%s", message)

    def close(self) -> bool:
        """No more calls. Waits for the calls under way, unless the store was given up
        while one still waits on it: that one is left behind (its thread never keeps the
        process from ending). Whether the thread is done."""
        if self._pending and self.given_up():
            self._thread.shutdown(wait=False, cancel_futures=True)
            return False
        self._thread.shutdown(wait=True)
        return True
