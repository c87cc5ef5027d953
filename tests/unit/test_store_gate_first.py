"""`StoreGate.first`: a call run ahead of every call queued on the one store thread,
after the call under way only (the lease renewals: they never wait behind the tries of
writes that each wait a while for a row another client holds)."""

from __future__ import annotations

import asyncio
import threading

from swarm_engine.engine.gate import StoreGate
from swarm_engine.osthreads import OneThread


def test_a_first_call_runs_after_the_call_under_way_before_the_queued_ones() -> None:
    order: list[str] = []
    under_way = threading.Event()
    release = threading.Event()

    def blocking() -> None:
        under_way.set()
        release.wait()
        order.append("under way")

    async def main() -> None:
        gate = StoreGate()
        first = asyncio.ensure_future(gate(blocking))
        await asyncio.to_thread(under_way.wait)
        queued = [asyncio.ensure_future(gate(order.append, f"queued {i}")) for i in range(3)]
        await asyncio.sleep(0)  # sleep-ok: a yield, so the queued calls are handed over
        renewal = asyncio.ensure_future(gate.first(order.append, "renewal"))
        await asyncio.sleep(0)  # sleep-ok: a yield, so the first call is handed over
        release.set()
        await asyncio.gather(first, *queued, renewal)
        assert gate.close() is True

    asyncio.run(main())
    assert order == ["under way", "renewal", "queued 0", "queued 1", "queued 2"]


def test_shutdown_runs_the_queued_calls_or_cancels_them() -> None:
    ran: list[int] = []
    under_way, release = threading.Event(), threading.Event()

    def blocking() -> bool:
        under_way.set()
        return release.wait()

    thread = OneThread("store")
    stuck = thread.submit(blocking)
    assert under_way.wait(10)
    later = [thread.submit(ran.append, i) for i in range(3)]
    thread.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert stuck.result(timeout=10) is True
    assert all(f.cancelled() for f in later) and ran == []

    kept = OneThread("store")
    calls = [kept.submit(ran.append, i) for i in range(3)]
    calls.append(kept.submit_first(ran.append, -1))
    kept.shutdown(wait=True)
    assert all(f.done() and not f.cancelled() for f in calls)
    assert sorted(ran) == [-1, 0, 1, 2]
