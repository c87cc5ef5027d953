"""Holding a process at a write: a pipe whose buffer is full blocks the process's next
write to it until the test reads (`blocked_writing` tells when it waits there)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


class HeldStart:
    """A `start --foreground` whose stdout is a full pipe: its `engine starting` line
    blocks in `write` until `release`; its stderr is read whole meanwhile."""

    def __init__(self, home: Path, *wrapper: str) -> None:
        """Started (run by `wrapper`, say `nohup`, if given)."""
        from tests.support.cli import env_for

        self.read_end, write_end, self.held = full_pipe()
        self.proc = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "swarm_engine", "start", "--foreground"],
            env=env_for(home),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(write_end)
        self.errors: list[str] = []
        self.drain = threading.Thread(target=self._drain)
        self.drain.start()
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read)

    def _drain(self) -> None:
        self.errors.append(self.proc.stderr.read() if self.proc.stderr else "")

    def _read(self) -> None:
        self.chunks.extend(iter(lambda: os.read(self.read_end, 65536), b""))

    def release(self) -> None:
        """Read its stdout from here on: its writes go on."""
        if self.reader.ident is None:
            self.reader.start()

    def ended(self, timeout: float = 60) -> tuple[int, str, str]:
        """Released, once it ends: its exit code, its stdout (after the filler), its
        stderr."""
        self.release()
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=timeout)
        self.drain.join(timeout=timeout)
        out = b"".join(self.chunks)[self.held :].decode()
        return code, out, self.errors[0] if self.errors else ""

    def close(self) -> None:
        """Killed (its process group) if it still runs; its pipes closed."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.reader.ident is not None:  # (it reads to the end of the pipe)
            self.reader.join(timeout=60)
        os.close(self.read_end)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def read_lines(proc: subprocess.Popen[str], put: Callable[[str], object]) -> threading.Thread:
    """A daemon thread that hands each line of `proc`'s stdout (newline kept) to `put` as it
    comes, so a full pipe never blocks the process's output. It ends at the end of the
    output, or quietly when the test's teardown closes the pipe under it (stopping the
    process reads what is left itself)."""

    def pump() -> None:
        assert proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # closed under the read
            for line in proc.stdout:
                put(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


class HeldByStdin:
    """`swarm-engine ARGS` whose stdin is a pipe the test holds: a `sitecustomize` hook on
    its PYTHONPATH that reads a byte from stdin holds the process there until `release`.
    Use as a context manager: on leaving, the pipe is closed and, if it still runs, its
    process group killed."""

    def __init__(self, args: list[str], env: dict[str, str], *, text: bool = False) -> None:
        read_end, self.write_end = os.pipe()
        self.proc: subprocess.Popen[Any] = subprocess.Popen(
            [sys.executable, "-m", "swarm_engine", *args],
            env=env,
            stdin=read_end,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=text,
            start_new_session=True,
        )
        os.close(read_end)

    def release(self) -> None:
        """Let the hold go on (one byte on its stdin)."""
        os.write(self.write_end, b"x")

    def __enter__(self) -> HeldByStdin:
        return self

    def __exit__(self, *_: object) -> None:
        os.close(self.write_end)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
