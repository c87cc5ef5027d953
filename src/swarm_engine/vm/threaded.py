"""A sandbox command run to its end on a worker thread (`ProcessVM.exec`'s common path).

The event loop hands the whole command over in one call: the spawn (`fork_exec`, which
would otherwise block the loop for milliseconds under load), reading its output,
waiting for it, its timeout, its disk watch and killing it. The loop only awaits the
result, so a command costs it one hand-off instead of a subprocess transport, three pipes
and the tasks that pump them. Used when nothing must happen on the loop while the command
runs: no output streamed to a callback, no ports to forward (those commands keep the
loop's own subprocess path).

The semantics are the loop path's: the command is over when its own process exits (its
leftovers die then: the PID namespace ends, or the subreaper kills them); what its pipes
still hold is read for up to `drain` seconds after that; past `limit` seconds its tree is
killed (exit code 124); the workspace is measured every `check_every` seconds and the
tree killed when over its limits, and once more when the command ends (a burst shorter
than `check_every` is caught too); output is kept bounded (`BoundedOutput`).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from swarm_engine.vm.ending import said_no_space
from swarm_engine.vm.output import BoundedOutput
from swarm_engine.vm.proctree import kill_tree

READ_BYTES = 65536


@dataclass
class Outcome:
    returncode: int | None
    stdout: BoundedOutput
    stderr: BoundedOutput
    timed_out: bool = False
    over_disk: bool = False
    """Killed while it ran: its workspace was over its limits."""
    ended_over_disk: bool = False
    """Its workspace was over its limits when it ended (by itself: it was not killed)."""
    cancelled: bool = False
    out_of_memory: bool = False
    """Its VM's memory cgroup counted an OOM kill while it ran (`Command.oom_kills`)."""

    @property
    def no_space(self) -> bool:
        """It failed, and its stderr says a write found no room (`vm/ending.py`)."""
        return self.returncode != 0 and said_no_space(self.stderr.value())


@dataclass
class Command:
    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    pass_fds: tuple[int, ...]
    stdin: bytes | None
    limit: float
    keep: int
    drain: float
    check_every: float
    over_disk: Callable[[], bool]
    """True when the workspace is over its limits (called on this thread, every
    `check_every` seconds while the command runs and once when it has ended by itself)."""
    spawned: Callable[[], None] = field(default=lambda: None)
    """Called on this thread once the child is started (to close fds only it needs)."""
    oom_kills: Callable[[], int] = field(default=lambda: 0)
    """The OOM kills its VM's memory cgroup counted so far (read on this thread before
    the command starts and after it ends: more at the end, it ran out of memory)."""


class Job:
    """One command on a worker thread. `run()` there; `cancel()` from anywhere: the
    command's tree is killed and `run()` returns once its process has exited."""

    def __init__(self, command: Command) -> None:
        self.command = command
        self.started = False
        """Whether its process was started: an `OSError` from `run()` before that means
        nothing ran (so it may be tried again, `vm/shortage.py`)."""
        self._cancelled = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def cancel(self) -> None:
        self._cancelled = True
        with contextlib.suppress(OSError):  # closed: the job is over anyway
            os.write(self._wake_w, b"x")

    def run(self) -> Outcome:
        """Spawn the command and wait for its end. Raises `OSError` when it cannot start."""
        cmd = self.command
        ooms = cmd.oom_kills()
        try:  # its selector first: a shortage of fds for it is met before anything runs
            sel = selectors.DefaultSelector()
            try:
                proc = subprocess.Popen(
                    cmd.argv,
                    stdin=subprocess.PIPE if cmd.stdin is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=cmd.cwd,
                    env=cmd.env,
                    start_new_session=True,
                    pass_fds=cmd.pass_fds,
                )
            except BaseException:
                sel.close()
                raise
        except BaseException:
            self._close_wake()
            raise
        self.started = True
        try:
            cmd.spawned()
            outcome = self._wait(proc, sel)
            outcome.out_of_memory = cmd.oom_kills() > ooms
            return outcome
        finally:
            sel.close()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            self._close_wake()

    def _close_wake(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _wait(self, proc: subprocess.Popen[bytes], sel: selectors.BaseSelector) -> Outcome:
        cmd = self.command
        out = Outcome(None, BoundedOutput(cmd.keep), BoundedOutput(cmd.keep))
        sinks = {"stdout": out.stdout, "stderr": out.stderr}
        started = time.monotonic()
        deadline = started + cmd.limit
        next_check = started + cmd.check_every
        killed = False
        exited_at: float | None = None
        pending = cmd.stdin or b""
        try:
            pidfd: int | None = os.pidfd_open(proc.pid)
        except (OSError, AttributeError):  # no pidfd here: the exit is polled instead
            pidfd = None
        with sel:
            assert proc.stdout is not None and proc.stderr is not None
            sel.register(proc.stdout.fileno(), selectors.EVENT_READ, "stdout")
            sel.register(proc.stderr.fileno(), selectors.EVENT_READ, "stderr")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            if pidfd is not None:
                sel.register(pidfd, selectors.EVENT_READ, "exit")
            if proc.stdin is not None:
                os.set_blocking(proc.stdin.fileno(), False)
                sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE, "stdin")
            try:
                open_streams = 2
                while True:
                    now = time.monotonic()
                    if exited_at is None and proc.poll() is not None:
                        exited_at = now  # reaped: its pid is never used (killed) again
                    if exited_at is not None:
                        if open_streams == 0 or now >= exited_at + cmd.drain or self._cancelled:
                            break  # over; a pipe still held by a stray holder is let go
                        wait = exited_at + cmd.drain - now
                    else:
                        if self._cancelled and not killed:
                            out.cancelled = killed = True
                            kill_tree(proc.pid)
                        if now >= deadline and not killed:
                            out.timed_out = killed = True
                            kill_tree(proc.pid)
                        if now >= next_check and not killed:
                            if cmd.over_disk():
                                out.over_disk = killed = True
                                kill_tree(proc.pid)
                            next_check = time.monotonic() + cmd.check_every
                        wait = 0.01 if pidfd is None or killed else min(deadline, next_check) - now
                    for key, _ in sel.select(max(0.0, wait)):
                        what = key.data
                        if what == "wake":
                            with contextlib.suppress(OSError):
                                os.read(self._wake_r, 64)
                        elif what == "exit":
                            sel.unregister(key.fd)
                        elif what == "stdin":
                            assert proc.stdin is not None
                            try:
                                pending = pending[os.write(key.fd, pending[:READ_BYTES]) :]
                            except BlockingIOError:
                                continue
                            except OSError:  # it closed its stdin: the rest is not wanted
                                pending = b""
                            if not pending:
                                sel.unregister(key.fd)
                                proc.stdin.close()
                        else:
                            chunk = os.read(key.fd, READ_BYTES)
                            if chunk:
                                sinks[what].add(chunk)
                            else:
                                sel.unregister(key.fd)
                                open_streams -= 1
            except BaseException:
                if proc.returncode is None:
                    kill_tree(proc.pid)
                    proc.wait()
                raise
            finally:
                if pidfd is not None:
                    os.close(pidfd)
        out.returncode = proc.returncode
        if not killed and not self._cancelled:  # what it wrote since the last count
            out.ended_over_disk = cmd.over_disk()
        return out
