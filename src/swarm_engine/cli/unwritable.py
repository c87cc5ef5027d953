"""Output that cannot be written: a closed pipe (`| head -1`), a full disk or quota behind
`> file`, an I/O error. Printing must never cut short what a command does (a ticket's run
under `run-ticket --wait`, a foreground engine's work): the stream that failed is pointed
at /dev/null, so that the command goes on and nothing later (the interpreter's own flush
at exit) fails on it again, and why is kept in `LOST` for the command's end to say (a
closed pipe is not an error: its reader is done). No Rich here: `cli/main.py` reads it on
every command's way out."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import IO, Any

LOST: list[OSError] = []
"""Why a write of the command's output failed, the first time (`drop`)."""
DONE: list[str] = []
"""What the command did that its lost output was to say (`done`): said on stderr with
the output's failure, so that its non-zero exit does not read as nothing done."""


def done(what: str) -> None:
    """The command did `what` (one line: `the engine started (pid 5)`) whatever becomes
    of its output; told with the error if that output cannot be written."""
    DONE.append(what)


def drop(exc: OSError, stream: IO[Any] | None) -> None:
    """A write to `stream` failed with `exc`: keep why, and point `stream` at /dev/null."""
    if not LOST:
        LOST.append(exc)
    if stream is None:
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, stream.fileno())
        finally:
            os.close(null)
    except (OSError, ValueError, AttributeError):  # (no descriptor: an in-memory buffer)
        pass


@contextlib.contextmanager
def guard(stream: IO[Any] | None) -> Iterator[None]:
    """Writes to `stream` in the block: one that fails is `drop`ped, not raised."""
    try:
        yield
    except OSError as exc:
        drop(exc, stream)


def failure() -> OSError | None:
    """Why the output could not be written, when that is the command's error (a closed
    pipe is not: None)."""
    if LOST and not isinstance(LOST[0], BrokenPipeError):
        return LOST[0]
    return None
