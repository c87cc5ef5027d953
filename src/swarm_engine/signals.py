"""Stop signals noted, not acted on, while a command gets going or hands them to a server.

`start` (before its engine's loop has handlers of its own) and `serve` (uvicorn puts back
the handler it found and sends the signal again) both need the same thing: for a while, a
stop signal is only noted, so the command can stop cleanly and say so; after it, the
handlers found are put back.
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
