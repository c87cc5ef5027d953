"""A step's output log file (`artifacts/run-<id>/<step>.<try>/output.log`), capped in size.

The first part of the output is written as it arrives (so `swarm-engine logs` and a
reader of the file see it live); once that part is full, only the last `tail` bytes are
kept, in memory, and written at the end after a `[... N bytes cut ...]` line (the same
marker as a command's captured output, `vm.output.cut_marker`). The file never exceeds
`limit` bytes, whatever the step prints.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from swarm_engine.vm.bwrap import SHORTAGES
from swarm_engine.vm.output import continuation_bytes, cut_marker, unfinished_char

log = logging.getLogger(__name__)

MAX_TAIL = 1024 * 1024
"""At most this many bytes of the end are held in memory (and written at the end)."""
MARKER_ROOM = 64
"""Bytes kept free for the marker line (it is at most 45 bytes)."""
MIN_LIMIT = 4096


class Deferred:
    """The type of `DEFERRED`."""


DEFERRED = Deferred()
"""`StepLog(opened=DEFERRED)`: the file is given later, to `StepLog.attach`."""


class StepLog:
    """A text sink with `write(str)` and `flush()`, appending UTF-8 to `path`.

    `limit` (bytes, at least `MIN_LIMIT`): the file's size cap. The tail kept is
    `min(limit // 2, MAX_TAIL)` bytes; the head written live is the rest of `limit` less
    `MARKER_ROOM`. Use as a context manager; `close()` writes the marker and the tail.
    Memory: at most the tail plus one write. `total` counts every byte written to it.
    `mirror`, if given, is called with every piece of what the log holds, in order (the
    same bytes as the file, even when the file cannot be written): the live copy in the
    store (`engine/logship.py`).

    `opened`: the file as `open_log` opened it (or the error it met); None: opened here;
    `DEFERRED`: given later to `attach` (what is written before that is held in memory,
    at most the head's room, and written then).

    `park()` gives the file's descriptor back while the step waits out a shortage of them
    (`vm/shortage.py`, `releasing`): what is written meanwhile is held in memory the same
    way, and the file is opened again (appending) at the next `flush`, by `reopen`, or at
    `close`. A file given or opened again while the host is still short keeps the log
    parked; no byte is lost and the order is kept.
    """

    def __init__(
        self,
        path: Path,
        limit: int,
        mirror: Callable[[bytes], None] | None = None,
        opened: BinaryIO | OSError | Deferred | None = None,
    ) -> None:
        if limit < MIN_LIMIT:
            raise ValueError(f"a step log's limit must be at least {MIN_LIMIT} bytes")
        self.path = path
        self.limit = limit
        self.total = 0
        self._keep_tail = min(limit // 2, MAX_TAIL)
        self._head_room = limit - self._keep_tail - MARKER_ROOM
        self._written = 0
        self._head_full = False
        self._tail: deque[bytes] = deque()
        self._tail_len = 0
        self._mirror = mirror
        self.failed: OSError | None = None
        """Set when the file could not be written (a full disk): the step goes on, and its
        output is still streamed and kept in the step's outputs; only the log file stops."""
        self._file: BinaryIO | None = None
        self._ended = False
        self._early: list[bytes] | None = [] if isinstance(opened, Deferred) else None
        """What was written before `attach`, or while parked (None: written to the file)."""
        self._given = not isinstance(opened, Deferred)
        self._parked = False
        if isinstance(opened, Deferred):
            return
        self._open(opened)

    def _open(self, opened: BinaryIO | OSError | None) -> None:
        if isinstance(opened, OSError):  # `open_log` could not open it
            self._fail(opened)
            return
        try:
            self._file = opened if opened is not None else self.path.open("ab")
        except OSError as exc:
            self._fail(exc)

    @property
    def deferred(self) -> bool:
        """Made `DEFERRED` and not given its file yet."""
        return not self._given

    @property
    def parked(self) -> bool:
        """Its file's descriptor given back (`park`) and not opened again yet."""
        return self._parked

    def attach(self, opened: BinaryIO | OSError) -> None:
        """The file of a log made `DEFERRED` (as `open_log` returned it): what was
        written so far goes to it now. Only the first call counts; after `close`, a file
        given is closed. A log parked meanwhile, or given a shortage (EMFILE...), closes
        the file and stays parked."""
        if self._given:
            if not isinstance(opened, OSError) and opened is not self._file:
                with contextlib.suppress(OSError):
                    opened.close()
            return
        self._given = True
        if self._parked or (isinstance(opened, OSError) and opened.errno in SHORTAGES):
            self._parked = True
            if not isinstance(opened, OSError):
                with contextlib.suppress(OSError):
                    opened.close()
            if self._ended:
                self._reopen_or_fail()
            return
        early, self._early = self._early or [], None
        self._open(opened)
        if self.failed is None and self._file is not None:
            try:
                for data in early:
                    self._file.write(data)
            except OSError as exc:
                self._fail(exc)
        if self._ended:  # closed before its file came
            self._close_file()

    def park(self) -> None:
        """Give the file's descriptor back for now (the step waits out a shortage of
        them); see the class. A log not given its file yet closes it when it comes."""
        if self._parked or self._ended or self.failed is not None:
            return
        self._parked = True
        if not self._given or self._file is None:
            return
        opened, self._file = self._file, None
        self._early = []
        try:
            opened.close()  # (what it holds is flushed)
        except OSError as exc:
            self._fail(exc)

    def reopen(self) -> None:
        """A parked log's file opened again now, what was held written to it (and closed
        if the log was closed meanwhile). Raises the `OSError` of a shortage (the log
        stays parked); any other error stops the file (`failed`)."""
        if not (self._parked and self._given) or self.failed is not None:
            return
        try:
            try:
                opened = self.path.open("ab")
            except FileNotFoundError:  # its folder was not made (the host was short then)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                opened = self.path.open("ab")
        except OSError as exc:
            if exc.errno in SHORTAGES:
                raise
            self._parked = False
            self._fail(exc)
            return
        self._parked = False
        early, self._early = self._early or [], None
        self._file = opened
        try:
            for data in early:
                opened.write(data)
            opened.flush()
        except OSError as exc:
            self._fail(exc)
        if self._ended:
            self._close_file()

    def _reopen_or_fail(self) -> None:
        """Reopen a parked log now; if the host is still short, the file keeps what it
        has (the live copy has all) and says so."""
        try:
            self.reopen()
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self._early = None  # nothing more goes to the file
        if self.failed is None:
            self.failed = exc
            log.warning("step log %s is no longer written: %s", self.path, exc)

    def _put(self, data: bytes) -> None:
        if self._mirror is not None and data:
            self._mirror(data)
        if self._early is not None:
            self._early.append(data)
        elif self.failed is None and self._file is not None:
            try:
                self._file.write(data)
            except OSError as exc:
                self._fail(exc)

    def write(self, text: str) -> int:
        """Append `text`; returns its length in characters (as `TextIO.write` does)."""
        data = text.encode("utf-8", errors="replace")
        self.total += len(data)
        if not self._head_full:
            room = self._head_room - self._written
            if len(data) <= room:
                self._put(data)
                self._written += len(data)
                return len(text)
            part = data[:room]
            part = part[: len(part) - unfinished_char(part)]  # do not split a character
            self._put(part)
            self._written += len(part)
            self._head_full = True
            data = data[len(part) :]
        if len(data) >= self._keep_tail:
            self._tail.clear()
            data, self._tail_len = data[-self._keep_tail :], 0
        self._tail.append(data)
        self._tail_len += len(data)
        while self._tail_len - len(self._tail[0]) >= self._keep_tail:
            self._tail_len -= len(self._tail.popleft())
        return len(text)

    @property
    def buffered(self) -> int:
        """Bytes of the end held in memory now (at most the tail kept plus one write)."""
        return self._tail_len

    def flush(self) -> None:
        if self._parked and self._given:  # the step runs again: its file back, if it can
            with contextlib.suppress(OSError):  # still short: held a while longer
                self.reopen()
        if self.failed is None and self._file is not None:
            try:
                self._file.flush()
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        """Write the marker and the tail (if anything was cut) and close the file (a log
        still `DEFERRED` keeps them in memory, and `attach` writes them and closes it)."""
        if self._early is not None:
            if not self._ended:
                self._ended = True
                self._put_end()
            if self._parked and self._given:
                self._reopen_or_fail()
            return
        if self._file is None or self._file.closed:
            return
        self._ended = True
        self._put_end()
        self._close_file()

    def _put_end(self) -> None:
        tail = b"".join(self._tail)
        if self.total > self._written + len(tail) or len(tail) > self._keep_tail:
            tail = tail[-self._keep_tail :]
            tail = tail[continuation_bytes(tail) :]
            self._put(cut_marker(self.total - self._written - len(tail)))
        self._put(tail)

    def _close_file(self) -> None:
        if self._file is None or self._file.closed:
            return
        try:
            self._file.close()
        except OSError as exc:
            self._fail(exc)

    @staticmethod
    def open_log(path: Path) -> BinaryIO | OSError:
        """Make the log's folder and open the file for a `StepLog` (`opened=`): blocking
        file work, for a worker thread. An error is returned, not raised."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return path.open("ab")
        except OSError as exc:
            return exc

    def __enter__(self) -> StepLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
