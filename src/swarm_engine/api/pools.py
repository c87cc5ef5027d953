"""Store and registry handles for request threads.

A SQLite connection has one user at a time, so each request borrows a store of its own
from an idle list (opened when none is idle, kept for the next request). A PostgreSQL
store is a connection pool already, safe to share between threads: every request gets
the same one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")
MAX_IDLE = 8


class Pool(Generic[T]):
    """Handles made by `make` and ended by `end`; `shared`: one handle for every borrower."""

    def __init__(
        self,
        make: Callable[[], T],
        end: Callable[[T], None],
        *,
        shared: bool,
        check: Callable[[], None] | None = None,
    ) -> None:
        self._make = make
        self.check = check
        """Called before each borrow: raises when no handle may be lent (see `borrow`)."""
        self._end = end
        self._shared = shared
        self._idle: list[T] = []
        self._one: T | None = None
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def borrow(self) -> Iterator[T]:
        """A handle for the caller alone (or the shared one) until the block ends; what
        the pool's `check` raises, if it refuses."""
        if self.check is not None:
            self.check()
        if self._shared:
            with self._lock:
                if self._one is None:
                    self._one = self._make()
                one = self._one
            yield one
            return
        with self._lock:
            handle = self._idle.pop() if self._idle else None
        if handle is None:
            handle = self._make()
        try:
            yield handle
        finally:
            with self._lock:
                keep = not self._closed and len(self._idle) < MAX_IDLE
                if keep:
                    self._idle.append(handle)
            if not keep:
                self._end(handle)

    def close(self) -> None:
        """End every idle handle (and the shared one); borrowed ones end when returned."""
        with self._lock:
            self._closed = True
            handles, self._idle = self._idle, []
            if self._one is not None:
                handles.append(self._one)
                self._one = None
        for handle in handles:
            self._end(handle)
