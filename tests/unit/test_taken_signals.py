"""`signals.taken_signals`: one handler for a command's stop signals, from when it takes
them to when it gives them back: raised where the command waits (once), held over a
stretch that must not be cut, relayed to an event loop (each one, in order, those noted
before included), and never a default handler between. Real signals raised in this
process (SIGUSR1 and SIGUSR2 stand in for the stop signals)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from types import FrameType

import pytest

from swarm_engine.signals import Interrupted, taken_signals

SIGS = (signal.SIGUSR1, signal.SIGUSR2)
SIG = signal.SIGUSR1


def test_the_first_signal_raises_where_it_waits_and_later_ones_are_only_noted() -> None:
    with taken_signals(SIGS) as taken:
        with pytest.raises(Interrupted) as raised, taken.raising():
            signal.raise_signal(signal.SIGUSR2)
        assert raised.value.number == signal.SIGUSR2
        with taken.raising():  # (what the command does about it is not cut short)
            signal.raise_signal(signal.SIGUSR1)
    assert taken.noted == [signal.SIGUSR2, signal.SIGUSR1]


def test_a_held_stretch_is_not_cut_the_signal_comes_as_it_ends() -> None:
    done = []
    with taken_signals(SIGS) as taken, pytest.raises(Interrupted), taken.raising():
        with taken.held():
            signal.raise_signal(signal.SIGUSR1)
            done.append("spawned")
            done.append("kept")
        done.append("not reached")
    assert done == ["spawned", "kept"]


def test_check_raises_a_signal_whose_exception_was_dropped() -> None:
    """A handler run inside a callback whose exceptions Python prints and drops (a weakref
    callback, a finalizer): the wait goes on, and the next `check` raises it."""
    with taken_signals(SIGS) as taken, taken.raising():
        with pytest.raises(Interrupted):
            signal.raise_signal(signal.SIGUSR1)  # (as if dropped: caught and forgotten)
        with pytest.raises(Interrupted):
            taken.check()
        taken.calm()
        signal.raise_signal(signal.SIGUSR1)
        taken.check()  # calm: nothing raised any more


def test_an_early_handler_found_is_disarmed_and_what_it_got_is_noted() -> None:
    class Early:
        def __init__(self) -> None:
            self.armed = True

        def disarm(self) -> list[int]:
            self.armed = False
            return [int(signal.SIGUSR1)]  # one it raised and saw dropped

        def __call__(self, number: int, _: FrameType | None) -> None:
            raise AssertionError("an early handler ran")

    early = Early()
    previous = {sig: signal.signal(sig, early) for sig in SIGS}
    try:
        with taken_signals(SIGS) as taken:
            signal.raise_signal(signal.SIGUSR2)
        assert taken.noted == [signal.SIGUSR1, signal.SIGUSR2]  # disarmed once, not twice
        assert not early.armed
        assert all(signal.getsignal(sig) is early for sig in SIGS)  # put back
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_signals_are_relayed_to_the_loop_in_order_and_noted_after_it() -> None:
    got: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        three = asyncio.Event()

        def stop(number: int) -> None:
            got.append(number)
            if len(got) == 3:
                three.set()

        with taken.relayed(loop, stop):
            assert got == [signal.SIGUSR1]  # the one noted before, at once
            signal.raise_signal(signal.SIGUSR2)
            # one the kernel gives another thread (this one blocks it; the other, made
            # before, does not): the loop, asleep in its wait, is woken all the same
            go = threading.Event()
            kill = threading.Thread(target=lambda: go.wait(60) and os.kill(os.getpid(), SIG))
            kill.start()
            signal.pthread_sigmask(signal.SIG_BLOCK, {SIG})
            try:
                go.set()
                await asyncio.wait_for(three.wait(), 60)
                assert signal.SIGUSR1 not in signal.sigpending()  # (taken by the other)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {SIG})
                go.set()
                kill.join()
        signal.raise_signal(signal.SIGUSR2)  # after the block: only noted

    with taken_signals(SIGS) as taken:
        signal.raise_signal(signal.SIGUSR1)
        asyncio.run(main())
        signal.raise_signal(signal.SIGUSR1)  # the loop closed: still ours, only noted
    assert got == [signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR1]
    assert taken.noted == [signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR1, signal.SIGUSR2,
                           signal.SIGUSR1]  # fmt: skip
