"""Blocking file work on a worker thread that never outlives its caller's cancel.

`asyncio.to_thread` hands a call to a worker thread; a cancel ends the await at once, but
not the call: it goes on, unseen, after whoever awaited it has moved on. On a VM's folder
that leaves things behind: a boot cancelled as its folder is being made cleans up first
and the folder comes after (left until `cleanup`); a file written into a VM as it is being
deleted makes the delete fail (`Directory not empty`) or makes the folder again.

`settled(fn, *args)` runs the call the same way, but once it has returned or raised, the
call is over or never ran: a cancel that comes before a worker has begun the call drops
it (it never runs; with `drop=False`, for work that must be done, such as deleting a
folder, it is waited for too); one that comes while it runs waits for its end (shielded:
further cancels wait too), then is raised. A cancel is never lost: it is raised even when
the call ended well meanwhile (what the call made is the caller's to undo).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class _Call:
    """`fn(*args)` for a worker thread, unless dropped before the thread begins it."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._fn, self._args = fn, args
        self._lock = threading.Lock()
        self._began = self._dropped = False

    def run(self) -> Any:
        with self._lock:
            if self._dropped:
                return None
            self._began = True
        return self._fn(*self._args)

    def drop(self) -> bool:
        """True when the call had not begun (it never will); False when it has."""
        with self._lock:
            self._dropped = not self._began
            return self._dropped


async def settled(
    fn: Callable[..., T],
    /,
    *args: Any,
    drop: bool = True,
    busy: set[asyncio.Future[Any]] | None = None,
) -> T:
    """`fn(*args)` on the loop's default executor (as `asyncio.to_thread`, context and
    all), never running on after a cancel of this await (see the module's docstring).
    `drop=False`: a cancel never drops the call, it waits for it. `busy`, if given, holds
    the call's future while the call may run (a VM's `destroy` waits for those before it
    deletes the folder)."""
    call = _Call(fn, args)
    context = contextvars.copy_context()
    done = asyncio.get_running_loop().run_in_executor(None, context.run, call.run)
    if busy is not None:
        busy.add(done)
        done.add_done_callback(busy.discard)
    try:
        result: T = await asyncio.shield(done)
        return result
    except asyncio.CancelledError:
        if drop and call.drop():
            if busy is not None:
                busy.discard(done)  # it never runs: nothing to wait for
            raise
        while not done.done():  # it runs: its end is waited for, whatever comes meanwhile
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([done])
        if not done.cancelled():
            done.exception()  # retrieved: its error, if any, gives way to the cancel
        raise
