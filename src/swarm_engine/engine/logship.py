"""Shipping a step's log to the store while the step runs (`step_logs`, issue 13).

`StepLog` hands every piece of the log it keeps to `LogShipper.feed` (so the store gets
what `output.log` holds, decoded: bytes that are not UTF-8 and NUL bytes as U+FFFD,
`records.stored_text`; bounded by `max_log_bytes`). What has gathered is written
as one chunk `FLUSH_SECONDS` after its first byte, or sooner when `CHUNK_BYTES` are
waiting, by a task of the shipper's own (started only then: a step that ends sooner
never has one), through the runner's `write` (retried while the store is busy and the
lease is held). A slow store is a delay: what waits is held in memory, and that is
bounded by the log's own cap. Once the attempt loses its ticket, shipping stops. A step
stopped from outside ships the rest too, for at most `STOPPED_SHIP_SECONDS`; when the
store did not take it by then, the stored log is cut short, and `cut_note` gives the line
that says so, stored with the run's end (`TicketRunner.log_cut`). At the step's end the
runner takes the rest (`take_rest`): it stores it with the step's end, or, once the task
has started, waits for the task to ship it first.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType

from swarm_engine.errors import StaleAttemptError
from swarm_engine.records import stored_text

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.05
CHUNK_BYTES = 32 * 1024
STOPPED_SHIP_SECONDS = 2.0
"""How long a stopped step's end waits for the rest of its log to be stored."""
ROW_BYTES = 256 * 1024
"""The most one stored chunk holds (bytes of the log; its text may be a little longer where
bytes that are not UTF-8, and NUL bytes, became U+FFFD: `records.stored_text`): what gathered while the store was slow is stored
as several rows, so whoever reads the log back (`logs`, the API) holds one bounded row at a
time."""

CUT_NOTE = (
    "[swarm-engine: the step was stopped while the store was busy and the rest of its log"
    " was not stored within {seconds:g}s: the stored log may end early here; the whole log"
    " is in {path}]\n"
)
"""The line that ends the stored log of a stopped step whose rest the store did not take."""

Append = Callable[[str], Awaitable[object]]


class LogShipper:
    """Collects a step's log bytes (`feed`, from any code on the loop) and appends them to
    the store in chunks with `append(text)`. Use `async with`: leaving it ships the rest."""

    def __init__(self, append: Append) -> None:
        self._append = append
        self._pending: deque[bytes] = deque()
        self._pending_len = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False
        self._closing = False
        self._open_line = False
        """Whether the text stored last ended mid-line."""
        self.cut_short = False
        """Whether the rest of a stopped step's log was given up unstored (`cut_note`)."""

    def feed(self, data: bytes) -> None:
        if self._stopped:
            return
        self._pending.append(data)
        self._pending_len += len(data)
        if self._pending_len >= CHUNK_BYTES:
            self._kick()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._kick)

    def _kick(self) -> None:
        """Ship what waits now (starting the shipping task on first use)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._stopped or self._closing:
            return
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="step-log-shipper")
        self._wake.set()

    async def take_rest(self) -> str | None:
        """All that waits, as text, for the caller to store itself (then the shipper
        stops). When the shipper's task has started, it ships the rest itself (keeping
        the order) and this waits for it to end, returning None: every piece of the log
        has then passed `append` (which may refuse it: `bounds.RunBudget`), so the step's
        end is decided knowing its whole log."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            await self._task
            return None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._stopped:
            return ""
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_len = 0
        self._stopped = True
        return stored_text(self._decoder.decode(data, final=True))

    async def __aenter__(self) -> LogShipper:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Ship the rest and stop. When the step was stopped (cancelled: its ticket's
        cancel or timeout, `stop --now`), the rest is shipped too, for at most
        `STOPPED_SHIP_SECONDS` (then, or on another cancel, what is left stays in
        `output.log` only): its last lines were lost from the stored log."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            await self._ship_rest_within(STOPPED_SHIP_SECONDS)
            return
        self._closing = True
        if self._task is None:
            await self._ship(final=True)
            return
        self._wake.set()
        await self._task

    async def _ship_rest_within(self, seconds: float) -> None:
        """Ship what waits (after what the task is shipping, in order) for at most
        `seconds`, then stop shipping. The caller was cancelled: this is not."""
        self._closing = True
        if self._task is None:
            if not self._pending or self._stopped:
                return
            self._task = asyncio.create_task(self._ship(final=True), name="step-log-rest")
        else:
            self._wake.set()
        task = self._task
        try:
            await asyncio.wait_for(asyncio.shield(task), seconds)
        except (TimeoutError, asyncio.CancelledError):  # (a slow store, or cancelled again)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.cut_short = not self._stopped  # (stopped: the attempt lost its ticket)

    def cut_note(self, path: str) -> str | None:
        """The line to store after the log of a step whose rest was given up unstored
        (`cut_short`), naming the file that holds it whole (`path`, its `output.log`);
        None when nothing was given up. Its own line, after a stored line left open."""
        if not self.cut_short:
            return None
        note = CUT_NOTE.format(seconds=STOPPED_SHIP_SECONDS, path=path)
        return stored_text(("\n" if self._open_line else "") + note)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            closing = self._closing
            await self._ship(final=closing)
            if closing or self._stopped:
                return

    async def _ship(self, *, final: bool) -> None:
        """Store what waits, in rows of at most `ROW_BYTES` (what comes meanwhile too)."""
        while not self._stopped and self._pending:
            data = self._take(ROW_BYTES)
            text = stored_text(self._decoder.decode(data, final=final and not self._pending))
            if not text:
                continue
            try:
                await self._append(text)
                self._open_line = not text.endswith("\n")
            except StaleAttemptError:
                self._stopped = True  # the attempt lost its ticket: its log is not wanted
            except Exception as exc:  # a store failure must not fail the step: the file has it
                log.warning("a step's live log could not be stored: %s", exc)
                self._stopped = True

    def _take(self, most: int) -> bytes:
        """Up to `most` bytes from the front of what waits (a piece is split if need be)."""
        taken: list[bytes] = []
        size = 0
        while self._pending and size < most:
            piece = self._pending[0]
            room = most - size
            if len(piece) <= room:
                self._pending.popleft()
            else:
                piece, self._pending[0] = piece[:room], piece[room:]
            taken.append(piece)
            size += len(piece)
        self._pending_len -= size
        return b"".join(taken)
