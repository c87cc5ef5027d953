"""`StoreGate.given_up_when_silent` (`run-ticket --wait`): a store that has not answered
for the grace while a call waits on it is given up at once, and the call is no longer
waited for; a store that answers in between is not; once a call went busy, only a
write the store takes ends the silence, not reads it answers meanwhile (a SQLite store
another client holds the write lock of lets reads through)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from swarm_engine.engine.gate import StoreGate
from swarm_engine.errors import StoreBusyError


def test_a_call_that_never_returns_is_given_up_after_the_grace() -> None:
    release = threading.Event()

    async def main() -> None:
        gate = StoreGate()
        watch = asyncio.ensure_future(gate.given_up_when_silent(0.3))
        stuck = asyncio.ensure_future(gate(release.wait))  # a paused server
        silent, said = await watch
        assert silent >= 0.3 and said.startswith("a call still unanswered after ")
        with pytest.raises(StoreBusyError, match="has not answered"):
            await stuck  # no longer waited for
        assert gate.given_up()
        with pytest.raises(StoreBusyError):  # nor does a later call queue behind it
            await gate(lambda: 1)
        assert gate.close() is False  # the stuck thread is left behind
        release.set()

    asyncio.run(main())


def test_reads_answered_do_not_end_the_silence_of_writes_that_go_busy() -> None:
    writes = [0]

    def write_locked() -> None:
        raise StoreBusyError("database /x is busy: database is locked")

    def read() -> int:
        return 1

    async def main() -> None:
        gate = StoreGate(writes=lambda: writes[0])
        watch = asyncio.ensure_future(gate.given_up_when_silent(0.3))
        bound = time.monotonic() + 30  # (it never ended: each read ended the silence)
        while not watch.done():  # a lease keeper: a write refused, a read answered, ...
            assert time.monotonic() < bound, "the store was never given up"
            with pytest.raises(StoreBusyError):
                await gate(write_locked)
            if not watch.done():
                assert await gate(read) == 1
        silent, said = watch.result()
        assert silent >= 0.3 and "database is locked" in said
        assert gate.given_up()
        assert gate.close() is True

    asyncio.run(main())


def test_a_store_that_takes_a_write_within_the_grace_is_not_given_up() -> None:
    writes = [0]
    busy = [True]

    def write() -> None:
        if busy[0]:
            raise StoreBusyError("database is locked")
        writes[0] += 1

    async def main() -> None:
        gate = StoreGate(writes=lambda: writes[0])
        watch = asyncio.ensure_future(gate.given_up_when_silent(30.0))
        with pytest.raises(StoreBusyError):
            await gate(write)
        assert gate.silent_for() > 0  # it owes a write
        busy[0] = False
        await gate(write)
        assert gate.silent_for() == 0 and not watch.done() and not gate.given_up()
        watch.cancel()
        assert gate.close() is True

    asyncio.run(main())
