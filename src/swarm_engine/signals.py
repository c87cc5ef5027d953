"""Stop signals noted, not acted on, while a command gets going or hands them to a server.

`start` (before its engine's loop has handlers of its own) and `serve` (uvicorn puts back
the handler it found and sends the signal again) both need the same thing: for a while, a
stop signal is only noted, so the command can stop cleanly and say so; after it, the
handlers found are put back. Both heed only the stop signals the process was not started
with ignored (`heeded`): `nohup` (SIGHUP) and a background job of a non-interactive shell
(SIGINT) mean them ignored for the process's whole life.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], Any] | int | None
"""What `signal.signal` takes and returns (a `signal.Handlers` is an int)."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""What stops `start --foreground` and `serve`: Ctrl-C, `kill`, a closed terminal."""


def ignored(sig: signal.Signals) -> bool:
    """`sig` is ignored in this process (inherited so: `nohup`, a background job)."""
    return signal.getsignal(sig) == signal.SIG_IGN


def heeded(signals: Iterable[signal.Signals] = STOP_SIGNALS) -> list[signal.Signals]:
    """Those of `signals` this process does not ignore, in order: the ones a command may
    take a handler for. Asked before any handler of the command's own is in (a handler put
    in for a signal ignored at start would turn it back on)."""
    return [sig for sig in signals if not ignored(sig)]


@contextlib.contextmanager
def noted_signals(signals: Iterable[signal.Signals]) -> Iterator[list[int]]:
    """Within the block each of `signals` is noted (its number appended, in order, to the
    list this yields) instead of doing what it did; as the block ends, however it ends, the
    handlers found are put back. Outside the main thread (signals reach only it, and
    `signal.signal` refuses elsewhere) nothing is installed and the list stays empty."""
    noted: list[int] = []
    found: dict[signal.Signals, Handler] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            found[sig] = signal.signal(sig, lambda number, _: noted.append(number))
    try:
        yield noted
    finally:
        for sig, handler in found.items():
            signal.signal(sig, handler)
