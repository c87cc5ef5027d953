"""Waiting out a shortage of the engine's host: a busy host is a delay, not a failure.

Where the process backend makes what a command needs (its VM's folder, the memory files
and pipes handed to bubblewrap, the command's own process and pipes), the host may refuse
for now: out of file descriptors (EMFILE, or ENFILE for the whole system), memory (ENOMEM),
processes (EAGAIN from fork/clone) or disk space (ENOSPC, EDQUOT: the VM's folder, the
inputs file). `patiently` tries again, 10 ms apart then doubling
up to 1 s, until the deadline it is given (the command's own timeout); then it fails with
one line naming the shortage and how long it waited. The wait is logged once, when it
begins; a cancel ends it at once (it waits on the event loop). Any other error fails at
once, as one line. A wait that a cancel ends (a timeout above the command's own, such as
the ticket's) leaves its line with whoever asked, through `noticing`, so that the timeout
can name the shortage it cut short. As a wait begins, what its caller can do without
meanwhile is given back (`releasing`: a step's open log file), so that steps waiting do
not hold what they wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import TypeVar

from swarm_engine.errors import VMError
from swarm_engine.vm.bwrap import DISK_SHORTAGES, SHORTAGES

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY = 0.01
MAX_DELAY = 1.0
WHAT = {
    errno.EMFILE: ("no file descriptors free", "raise ulimit -n or lower --max-vms"),
    errno.ENFILE: (
        "the host has no file descriptors free",
        "raise fs.file-max (sysctl) or lower --max-vms",
    ),
    errno.ENOMEM: ("no memory free", "lower --max-vms or the agents' memory_mb"),
    errno.EAGAIN: ("no processes free", "raise ulimit -u or lower --max-vms"),
    errno.ENOSPC: ("no disk space free", "free space on the file system of the engine's home"),
    errno.EDQUOT: ("no disk quota left", "raise the quota of the engine's user, or free space"),
}
"""Each shortage: what is missing, and what makes room for it."""


SPAWN_FDS = 8
"""File descriptors an event-loop spawn needs at once besides its sandbox's memory files:
its stdin, stdout and stderr pipes and the pipe that reports a failed exec (the pidfd
that watches the child comes once the child's ends are closed)."""

WAITED = SHORTAGES | DISK_SHORTAGES
"""What `patiently` waits out."""


FUTILE_SECONDS = 5.0
"""Out of its own descriptors (EMFILE) with every busy step waiting this long, a wait ends."""

_waits = 0
_busy: Callable[[], int] | None = None
_cut: ContextVar[list[str] | None] = ContextVar("shortage_cut", default=None)
_spare: ContextVar[tuple[Callable[[], None], ...]] = ContextVar("shortage_spare", default=())


@contextlib.contextmanager
def releasing(spare: Callable[[], None]) -> Iterator[None]:
    """Within it (and in the tasks made within it), a wait for a shortage calls `spare`
    as it begins: the caller gives back what it holds and can do without while it waits
    (a step's open `output.log`: with 8 steps waiting under `ulimit -n 28`, each holding
    its log, none could ever start). `spare` must not raise, and takes it back itself."""
    token = _spare.set((*_spare.get(), spare))
    try:
        yield
    finally:
        _spare.reset(token)


@contextlib.contextmanager
def noticing() -> Iterator[list[str]]:
    """Within it (and in the tasks made within it), each wait for a shortage that a
    cancel ends adds its one line to the list yielded (`cannot start command in vm-...:
    no file descriptors free (EMFILE) for 3s: raise ulimit -n or lower --max-vms`): what
    a timeout above the command's own cut short, for that timeout's error to name."""
    seen: list[str] = []
    token = _cut.set(seen)
    try:
        yield seen
    finally:
        _cut.reset(token)


def waiting() -> int:
    """How many starts wait out a shortage now, in this process (the daemon claims no
    more tickets meanwhile: each would only hold more of what is short)."""
    return _waits


def count_busy(steps: Callable[[], int] | None) -> None:
    """Tell `patiently` how many steps of this engine may hold descriptors now (the
    daemon's running tickets; None: not known). EMFILE is the engine's own limit: when
    every one of them waits for descriptors, none will be given back, and waiting longer
    would only hold the ticket (and, through `waiting`, the daemon's claims) until the
    timeout."""
    global _busy
    _busy = steps


def room_for(count: int) -> None:
    """Raise the `OSError` of a shortage (EMFILE, ENFILE) unless `count` more file
    descriptors can be opened now; they are closed again at once. For starts that must
    not be tried again once they fail midway: the shortage is met here, before them."""
    opened: list[int] = []
    try:
        for _ in range(count):
            opened.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
    finally:
        for fd in opened:
            os.close(fd)


def shortage(exc: OSError) -> str:
    """`no file descriptors free (EMFILE)`: what the host is short of, in words."""
    code = exc.errno if exc.errno is not None else 0
    return f"{WHAT[code][0]} ({errno.errorcode.get(code, code)})"


async def patiently(
    start: Callable[[], Awaitable[T]], *, deadline: float, doing: str, vm_id: str
) -> T:
    """`await start()` until it does not fail for a shortage, or `deadline` (monotonic
    time) passes. `start` must raise `OSError` only when it started nothing (so that trying
    again is safe). Raises `VMError` (`cannot <doing>: ...`) for any `OSError`: at once when
    it is not a shortage, at the deadline when it is."""
    global _waits
    delay = FIRST_DELAY
    since: float | None = None
    short: OSError | None = None
    try:
        while True:
            try:
                done = await start()
            except OSError as exc:
                if exc.errno not in WAITED:
                    raise VMError(f"cannot {doing}: {exc}") from exc
                short = exc
                now = time.monotonic()
                if since is None:
                    since = now
                    _waits += 1
                    for spare in _spare.get():  # what this wait can do without, given back
                        spare()
                    log.warning(
                        "cannot %s yet: %s; trying again for up to %gs",
                        doing, shortage(exc), round(max(deadline - now, 0.0), 1),
                        extra={"vm_id": vm_id},
                    )  # fmt: skip
                if _futile(exc) and now - since >= FUTILE_SECONDS:
                    raise VMError(_line(doing, exc, since, futile=True)) from exc
                if now < deadline:
                    await asyncio.sleep(min(delay, deadline - now))
                    delay = min(delay * 2, MAX_DELAY)
                if time.monotonic() >= deadline:  # no time left to run what would start now
                    raise VMError(_line(doing, exc, since)) from exc
                continue
            if since is not None:
                log.info(
                    "%s: the shortage passed after %gs",
                    doing, round(time.monotonic() - since, 1), extra={"vm_id": vm_id},
                )  # fmt: skip
            return done
    except asyncio.CancelledError:
        seen = _cut.get()
        if since is not None and short is not None and seen is not None:
            seen.append(_line(doing, short, since))  # for the timeout that cut it short
        raise
    finally:
        if since is not None:
            _waits -= 1


def _futile(exc: OSError) -> bool:
    return exc.errno == errno.EMFILE and _busy is not None and _waits >= _busy()


def _line(doing: str, exc: OSError, since: float, *, futile: bool = False) -> str:
    """`cannot start command in vm-...: no file descriptors free (EMFILE) for 30s: raise
    ulimit -n or lower --max-vms`"""
    _, fix = WHAT[exc.errno if exc.errno is not None else 0]
    waited = round(time.monotonic() - since, 1)
    if futile:  # (see count_busy)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return (
            f"cannot {doing}: {shortage(exc)} for {waited:g}s, and every running step waits"
            f" for them too: raise ulimit -n (now {soft}) or lower --max-vms"
        )
    return f"cannot {doing}: {shortage(exc)} for {waited:g}s: {fix}"
