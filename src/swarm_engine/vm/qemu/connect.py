"""Waiting for a QEMU being launched: its first connection on a listening socket, and
any step of its start-up, given up at once when the QEMU process exits first."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from swarm_engine.errors import VMError
from swarm_engine.vm.qemu.console import ConsoleSink
from swarm_engine.vm.qemu.machine import log_line, text_line

T = TypeVar("T")
EXIT_WAIT = 2.0
"""How long a start-up step that failed (the guest's channel closed) waits for QEMU's exit,
whose own error line says why better than the closed channel does."""


async def until_ready(
    work: Awaitable[T],
    proc: asyncio.subprocess.Process,
    timeout: float,
    folder: Path,
    what: str,
    console: ConsoleSink | None = None,
) -> T:
    """Await `work`, but fail at once if QEMU exits first (with its log in the error); if
    `work` fails and QEMU exits within `EXIT_WAIT` s, that exit is the error said.
    Cancelled just as `work` ended, what it made (an accepted socket) is closed, not
    dropped open."""
    task = asyncio.ensure_future(work)
    exited = asyncio.ensure_future(proc.wait())
    try:
        done, _ = await asyncio.wait(
            {task, exited}, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED
        )
    except BaseException:
        if task.done() and not task.cancelled() and task.exception() is None:
            made = task.result()
            if isinstance(made, socket.socket):
                made.close()
        raise
    finally:
        exited.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if task in done:
        failed = task.exception()
        if isinstance(failed, VMError):  # the channel closed: most often QEMU is ending
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), EXIT_WAIT)
            if proc.returncode is not None:
                raise await exit_error(proc, folder, what, console) from failed
        return task.result()
    if exited in done:
        raise await exit_error(proc, folder, what, console)
    raise TimeoutError(what)


async def exit_error(
    proc: asyncio.subprocess.Process,
    folder: Path,
    what: str,
    console: ConsoleSink | None,
    *,
    when: str | None = None,
) -> VMError:
    """One line: QEMU's exit (`exit_status`) and why (its own last error line, else the
    console's tail), said as `QEMU exited (...) before {what}`, or `{when}` if given."""
    if console is not None:  # its end as it came (the file keeps only its start)
        await console.flushed()
        said = text_line(console.end.decode(errors="replace"))
    else:
        said = log_line(folder / "console.log")
    detail = log_line(folder / "qemu.log", 1) or said
    if when is None:  # (a boot that said nothing: said so)
        return VMError(
            f"QEMU {exit_status(proc.returncode)} before {what}: {detail or 'no output'}"
        )
    return VMError(
        f"QEMU {exit_status(proc.returncode)} {when}" + (f": {detail}" if detail else "")
    )


def exit_status(code: int | None) -> str:
    """`exited (1)`, or `was killed by SIGKILL` for a process a signal ended (code -9)."""
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited ({code})"


async def accept_one(listener: socket.socket) -> socket.socket:
    """Accept one connection; unlike `loop.sock_accept`, a connection accepted just as the
    wait is cancelled (QEMU connected, then exited) is closed, not dropped open."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[socket.socket] = loop.create_future()

    def ready() -> None:
        if accepted.done():
            return
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        except OSError as exc:
            accepted.set_exception(exc)
            return
        conn.setblocking(False)
        accepted.set_result(conn)

    loop.add_reader(listener.fileno(), ready)
    try:
        return await accepted
    except asyncio.CancelledError:
        if accepted.done() and not accepted.cancelled() and accepted.exception() is None:
            accepted.result().close()
        raise
    finally:
        loop.remove_reader(listener.fileno())


def close_listeners(*listeners: socket.socket | None) -> None:
    for listener in listeners:
        if listener is None:
            continue
        with contextlib.suppress(OSError):
            os.unlink(listener.getsockname())
        listener.close()
