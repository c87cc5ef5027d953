"""`StoreGate` once the engine is told to stop: a store that does not answer for the
grace is given up, a call stuck on it is no longer waited for (and does not keep the
process from ending), a store that answers within the grace is waited for, and only a
write it takes is an answer."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from swarm_engine.engine.gate import StoreGate
from swarm_engine.errors import StoreBusyError
from swarm_engine.store.sqlite import connect


def test_a_call_stuck_on_a_silent_store_is_given_up_after_the_grace() -> None:
    release = threading.Event()

    async def main() -> None:
        gate = StoreGate()
        stuck = asyncio.ensure_future(gate(release.wait))  # a server that never replies
        await asyncio.sleep(0)  # sleep-ok: a yield, so the call is handed to the thread
        gate.stopping(0.2)  # told to stop while the call waits: it is not waited for
        with pytest.raises(StoreBusyError, match="has not answered"):
            await stuck
        assert gate.given_up()
        with pytest.raises(StoreBusyError):  # no call queues behind the stuck one
            await gate(lambda: 1)
        assert "unanswered" in (gate.trouble or "")
        assert gate.close() is False  # the stuck thread is left behind, not joined
        release.set()

    asyncio.run(main())


def test_a_store_busy_for_less_than_the_grace_is_waited_for() -> None:
    tries = []

    def busy_three_times() -> str:
        tries.append(1)
        if len(tries) <= 3:
            raise StoreBusyError("database is locked")
        return "recorded"

    async def main() -> None:
        gate = StoreGate()
        gate.stopping(30.0)
        assert await gate.retrying(busy_three_times) == "recorded"
        assert not gate.given_up() and gate.trouble is None
        assert gate.close() is True

    asyncio.run(main())


def test_a_store_busy_all_through_the_grace_is_given_up_with_what_it_said() -> None:
    def locked() -> None:
        raise StoreBusyError("database /x is busy: database is locked")

    async def main() -> None:
        gate = StoreGate()
        gate.stopping(0.3)
        with pytest.raises(StoreBusyError, match="database is locked"):
            await gate.retrying(locked)
        assert gate.given_up() and gate.trouble is not None and "locked" in gate.trouble
        assert gate.close() is True

    asyncio.run(main())


def test_a_process_whose_store_call_never_returns_still_ends() -> None:
    """A `ThreadPoolExecutor`'s thread is joined as the interpreter exits: a call stuck
    on a paused server kept the engine alive after its last line."""
    script = textwrap.dedent(
        """
        import asyncio, threading
        from swarm_engine.engine.gate import StoreGate
        from swarm_engine.errors import StoreBusyError

        async def main():
            gate = StoreGate()
            gate.stopping(0.1)
            try:
                await gate(threading.Event().wait)
            except StoreBusyError:
                print("given up")
            gate.close()

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "given up", done.stderr


def test_once_stopping_only_a_write_the_store_takes_is_an_answer(tmp_path: Path) -> None:
    """Another client holds the write lock: reads still go through, so a read that reset
    the silence kept a stopping engine going one `lease_ttl` after its last read (twice
    the bound, or more, under a held lock), not after the stop."""
    db = connect(tmp_path / "t.db", "tickets", busy_timeout=0.05)
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    write = "UPDATE engines SET pid = 1"

    async def main() -> None:
        gate = StoreGate(db.wait_at_most, lambda: db.writes)
        gate.stopping(3600.0)
        bound = gate.deadline()
        other.execute("BEGIN IMMEDIATE")
        assert await gate(db.one, "SELECT count(*) FROM tickets") is not None
        with pytest.raises(StoreBusyError):
            await gate(db.run, write)
        for _ in range(3):  # a read answers, the write lock still held: nothing moves
            await gate(db.one, "SELECT count(*) FROM tickets")
            assert gate.deadline() == bound
            assert "database is locked" in (gate.trouble or "")
        other.execute("ROLLBACK")
        await gate(db.run, write)  # the store takes a write: it answers again
        assert (gate.deadline() or 0) > (bound or 0)
        assert gate.trouble is None
        assert gate.close() is True

    try:
        asyncio.run(main())
    finally:
        other.close()
        db.close()
