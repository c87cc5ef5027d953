"""Stop signals noted while `start` gets going and while `serve` runs uvicorn
(`signals.noted_signals`): real signals raised in this process, the handlers found put
back however the block ends."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import pytest

from swarm_engine.signals import heeded, noted_signals


def test_signals_are_noted_in_order_and_the_handlers_found_put_back() -> None:
    seen: list[int] = []

    def found(number: int, _: FrameType | None) -> None:
        seen.append(number)

    previous = signal.signal(signal.SIGUSR1, found)
    try:
        before_int = signal.getsignal(signal.SIGINT)
        with noted_signals((signal.SIGUSR1, signal.SIGINT)) as noted:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C: noted, no KeyboardInterrupt
            signal.raise_signal(signal.SIGUSR1)
            signal.raise_signal(signal.SIGINT)
        assert noted == [signal.SIGINT, signal.SIGUSR1, signal.SIGINT]
        assert seen == []  # the handler found did not run meanwhile
        assert signal.getsignal(signal.SIGUSR1) is found
        assert signal.getsignal(signal.SIGINT) is before_int
        signal.raise_signal(signal.SIGUSR1)  # after the block: the handler found again
        assert seen == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_the_handlers_are_put_back_when_the_block_fails() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with (
        pytest.raises(RuntimeError, match="the server failed"),
        noted_signals((signal.SIGTERM,)) as noted,
    ):
        signal.raise_signal(signal.SIGTERM)  # noted: this test process goes on
        raise RuntimeError("the server failed")
    assert noted == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is before


def test_outside_the_main_thread_nothing_is_installed() -> None:
    """Python refuses a handler outside the main thread (a server run on another thread,
    a test's in-process command): the block runs with the handlers as they were."""
    before = signal.getsignal(signal.SIGTERM)
    inside: list[object] = []

    def other() -> None:
        with noted_signals((signal.SIGTERM,)) as noted:
            inside.extend([signal.getsignal(signal.SIGTERM), noted])

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(timeout=30)
    assert inside == [before, []]
    assert signal.getsignal(signal.SIGTERM) is before


def test_heeded_leaves_out_the_signals_ignored() -> None:
    """What `start --foreground` and `serve` take handlers for: a stop signal the process
    was started with ignored (`nohup`: SIGHUP) is left out, so it stays ignored."""
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        assert heeded((signal.SIGUSR1, signal.SIGUSR2)) == [signal.SIGUSR2]
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        assert heeded((signal.SIGUSR2, signal.SIGUSR1)) == [signal.SIGUSR2, signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)
