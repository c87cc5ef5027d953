"""Stop signals a command takes for itself: noted, raised where it waits, or relayed to
its event loop, by one handler that stays in place from when the command takes them to
when it gives them back.

`start` and `run-ticket --wait` (before their loop runs, then within the loop) and
`serve` (uvicorn puts back the handler it found and sends the signal again) need a stop
signal to be only noted for a while, so the command can stop cleanly and say so; the
daemonizing `start` needs one to end its wait for the engine it spawned, which it then
stops. One handler (`Taken`) does all three, so no signal ever meets a default
disposition between two phases (an event loop's own handlers put the defaults back as
the loop closes: SIGTERM then killed the process unsaid, SIGINT raised a
KeyboardInterrupt). As the block ends, however it ends, the handlers found are put back.
All heed only the stop signals the process was not started with ignored (`heeded`):
`nohup` (SIGHUP) and a background job of a non-interactive shell (SIGINT) mean them
ignored for the process's whole life.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

Handler = Callable[[int, FrameType | None], Any] | int | None
"""What `signal.signal` takes and returns (a `signal.Handlers` is an int)."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""What stops `start`, `serve` and `run-ticket --wait`: Ctrl-C, `kill`, a closed
terminal."""


def ignored(sig: signal.Signals) -> bool:
    """`sig` is ignored in this process (inherited so: `nohup`, a background job)."""
    return signal.getsignal(sig) == signal.SIG_IGN


def heeded(signals: Iterable[signal.Signals] = STOP_SIGNALS) -> list[signal.Signals]:
    """Those of `signals` this process does not ignore, in order: the ones a command may
    take a handler for. Asked before any handler of the command's own is in (a handler put
    in for a signal ignored at start would turn it back on)."""
    return [sig for sig in signals if not ignored(sig)]


def how(number: int) -> str:
    """A stop signal as a person names it: `Ctrl-C` for SIGINT, else its name."""
    return "Ctrl-C" if number == signal.SIGINT else signal.Signals(number).name


class Interrupted(BaseException):
    """A stop signal, raised where the command waits (`Taken.raising`). A BaseException,
    as KeyboardInterrupt: no `except Exception` takes it."""

    def __init__(self, number: int) -> None:
        super().__init__(number)
        self.number = number


class Taken:
    """The one handler of the stop signals a command has taken (`taken_signals`). Every
    signal is noted (`noted`, in order), then, by what the command is doing: nothing more
    (the default); the first raised as `Interrupted` (within `raising`, outside `held`);
    or handed to an event loop's callback (within `relayed`). A handler found as the
    signals were taken that can be disarmed (the entry point's early one) is disarmed:
    put back, it no longer stops the command."""

    def __init__(self) -> None:
        self.noted: list[int] = []
        self._raise = False
        self._raised = False
        self._wake: Callable[[], None] | None = None
        self._relayed = 0  # how many of `noted` went to the loop's callback

    def __call__(self, number: int, _: FrameType | None) -> None:
        self.noted.append(number)
        if self._wake is not None:
            self._wake()
        elif self._raise and not self._raised:
            self._raised = True
            raise Interrupted(number)

    def _raise_noted(self) -> None:
        if self._raise and self.noted and not self._raised:
            self._raised = True
            raise Interrupted(self.noted[0])

    @contextlib.contextmanager
    def raising(self) -> Iterator[None]:
        """Within the block the first stop signal raises `Interrupted` where the main
        thread is (one noted before the block raises as it begins); later ones are only
        noted, so what the command does about the first (stopping what it started) is not
        cut short."""
        self._raise = True
        try:
            self._raise_noted()
            yield
        finally:
            self._raise = False

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Within `raising`, a stretch no signal may cut (a child spawned and its pid
        kept): a signal meanwhile is raised as the block ends, when it ends normally."""
        was, self._raise = self._raise, False
        try:
            yield
        finally:
            self._raise = was
        self._raise_noted()

    def check(self) -> None:
        """Within `raising`: raise `Interrupted` if a stop signal has come, even when it
        was raised already (a signal's handler can run inside an import's or a
        finalizer's callback, where Python prints the exception and drops it)."""
        if self._raise and self.noted:
            self._raised = True
            raise Interrupted(self.noted[0])

    def calm(self) -> None:
        """From now on signals are only noted (the command is stopping, or done)."""
        self._raise = False
        self._raised = True

    @contextlib.contextmanager
    def relayed(
        self, loop: asyncio.AbstractEventLoop, callback: Callable[[int], None]
    ) -> Iterator[None]:
        """Within the block each stop signal calls `callback(number)` on `loop` (run in
        the loop: the block is entered in it), those noted before the block first, in
        order; after it, signals are only noted again. The loop is woken by each signal
        (a wakeup fd it reads), wherever the kernel delivered it."""
        import socket  # (here: a command that only notes its signals need not load it)

        if threading.current_thread() is not threading.main_thread():
            yield  # (no handler was taken: signals reach the main thread only)
            return
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        previous = signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)

        def drain() -> None:  # the handler itself runs once the loop's thread is awake
            with contextlib.suppress(OSError):
                while wake_read.recv(4096):
                    pass

        def relay() -> None:  # in the loop: a handler only notes and wakes, never relays
            while self._wake is not None and self._relayed < len(self.noted):
                self._relayed += 1
                callback(self.noted[self._relayed - 1])

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # (a loop closed: nothing to stop)
                loop.call_soon_threadsafe(relay)

        loop.add_reader(wake_read.fileno(), drain)
        try:
            self._wake = wake
            relay()  # those noted before the block, now
            yield
        finally:
            self._wake = None
            loop.remove_reader(wake_read.fileno())
            signal.set_wakeup_fd(previous)
            wake_read.close()
            wake_write.close()


@contextlib.contextmanager
def taken_signals(signals: Iterable[signal.Signals]) -> Iterator[Taken]:
    """Within the block each of `signals` goes to the `Taken` this yields (noted, unless
    the command asks more of it); as the block ends, however it ends, the handlers found
    are put back. Outside the main thread (signals reach only it, and `signal.signal`
    refuses elsewhere) nothing is installed and nothing is ever noted."""
    taken = Taken()
    found: dict[signal.Signals, Handler] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            found[sig] = signal.signal(sig, taken)
        disarmed: list[object] = []
        for handler in found.values():
            disarm = getattr(handler, "disarm", None)
            if callable(disarm) and not any(handler is x for x in disarmed):
                disarmed.append(handler)  # what it got and could not stop with: ours now
                taken.noted[:0] = disarm()
    try:
        yield taken
    finally:
        for sig, handler in found.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def noted_signals(signals: Iterable[signal.Signals]) -> Iterator[list[int]]:
    """`taken_signals` for a command that only notes them: within the block each of
    `signals` is noted (its number appended, in order, to the list this yields) instead of
    doing what it did; as the block ends the handlers found are put back."""
    with taken_signals(signals) as taken:
        yield taken.noted
