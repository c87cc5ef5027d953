"""Holding a process at a write: a pipe whose buffer is full blocks the process's next
write to it until the test reads (`blocked_writing` tells when it waits there)."""

from __future__ import annotations

import os
from pathlib import Path

FULL = 1 << 20
"""More than any pipe's buffer: what `fill` writes at most."""


def fill(write_end: int) -> int:
    """Fill the pipe of `write_end` until its buffer is full; how many bytes it took."""
    os.set_blocking(write_end, False)
    held = 0
    try:
        while held < FULL:
            held += os.write(write_end, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    return held


def full_pipe() -> tuple[int, int, int]:
    """A pipe whose buffer is full: its read end, its write end, how many bytes it holds."""
    read_end, write_end = os.pipe()
    return read_end, write_end, fill(write_end)


def blocked_writing(pid: int) -> bool:
    """The process's main thread waits in `write` to a full pipe."""
    try:
        return "pipe_write" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False
