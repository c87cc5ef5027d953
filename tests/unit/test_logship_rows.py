"""A step's live log reaches the store in bounded rows: what gathers while the store is
slow (a held write lock) is stored as several rows of at most `ROW_BYTES`, in order, with
nothing lost or doubled and UTF-8 characters never cut in two."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_engine.engine import logship
from swarm_engine.engine.logship import CHUNK_BYTES, ROW_BYTES, LogShipper


async def ship(pieces: list[bytes], hold: bool) -> list[str]:
    """Feed `pieces` to a shipper whose store blocks (`hold`) until all were fed; the rows
    it stored."""
    rows: list[str] = []
    gate = asyncio.Event()
    if not hold:
        gate.set()

    async def append(text: str) -> None:
        await gate.wait()
        rows.append(text)

    async with LogShipper(append) as shipper:
        for piece in pieces:
            shipper.feed(piece)
            await asyncio.sleep(0)  # the shipper's task runs between pieces, as live
        gate.set()
    return rows


def row_bound(row: str) -> bool:
    # bytes that were not UTF-8 become U+FFFD (3 bytes for each bad byte, at most)
    return len(row.encode("utf-8")) <= 3 * (ROW_BYTES + 3)


def test_a_log_gathered_while_the_store_was_held_is_stored_in_bounded_rows() -> None:
    line = "é-line of a busy step ✓\n".encode()
    pieces = [line * 2000] * 40  # ~2.6 MB, fed while the first row's write waits
    rows = asyncio.run(ship(pieces, hold=True))
    assert "".join(rows) == b"".join(pieces).decode()
    # (a row may begin with the end of a character the previous one could not finish)
    assert len(rows) > 1 and all(len(r.encode()) <= ROW_BYTES + 3 for r in rows), [
        len(r) for r in rows
    ]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=3 * CHUNK_BYTES), min_size=1, max_size=30),
    st.booleans(),
)
def test_rows_hold_the_log_in_order_whatever_its_bytes(pieces: list[bytes], hold: bool) -> None:
    rows = asyncio.run(ship(pieces, hold))
    expected = b"".join(pieces).decode("utf-8", errors="replace")
    assert "".join(rows) == expected.replace("\x00", "\ufffd")  # (records.stored_text)
    assert all(row_bound(r) for r in rows)


def test_the_rest_is_taken_only_once_every_piece_passed_append() -> None:
    """A step's end is decided knowing its whole log (a log that passes the run's budget
    fails its own step, not the next one): once the shipper's task has started, taking
    the rest waits for it to have handed every piece to `append`, however slow."""

    async def scenario() -> tuple[str | None, list[str], bytes]:
        rows: list[str] = []
        gate = asyncio.Event()

        async def append(text: str) -> None:
            await gate.wait()
            rows.append(text)

        fed = b"x" * (3 * CHUNK_BYTES)
        async with LogShipper(append) as shipper:
            shipper.feed(fed[:CHUNK_BYTES])  # (starts the task: its write is held)
            await asyncio.sleep(0)  # sleep-ok: one turn of the loop for the task to take it
            shipper.feed(fed[CHUNK_BYTES:])
            asyncio.get_running_loop().call_soon(gate.set)
            rest = await shipper.take_rest()
            seen = list(rows)
        return rest, seen, fed

    rest, seen, fed = asyncio.run(scenario())
    assert rest is None
    assert "".join(seen) == fed.decode()


def test_a_stopped_steps_last_lines_are_stored() -> None:
    """A step cancelled (its ticket's cancel or timeout, `stop --now`) while its last
    lines wait to be shipped (under `CHUNK_BYTES`, before `FLUSH_SECONDS`): they are
    stored too (a tester found them missing from the stored log in 5 of 6 cancels)."""

    async def scenario() -> tuple[list[str], bytes]:
        rows: list[str] = []

        async def append(text: str) -> None:
            await asyncio.sleep(0)  # sleep-ok: a write that yields, as the store's does
            rows.append(text)

        fed = b"the last line\n"

        async def step() -> None:
            async with LogShipper(append) as shipper:
                shipper.feed(fed)
                await asyncio.Event().wait()  # (runs until cancelled)

        running = asyncio.ensure_future(step())
        await asyncio.sleep(0)  # sleep-ok: one turn for the step to feed its line
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        return rows, fed

    rows, fed = asyncio.run(scenario())
    assert "".join(rows) == fed.decode()


def test_a_stopped_steps_rest_waits_for_a_held_store_only_so_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rest of a stopped step's log is not waited for past `STOPPED_SHIP_SECONDS`
    (a store held by another client): the step's end goes on, the file keeps it."""
    monkeypatch.setattr(logship, "STOPPED_SHIP_SECONDS", 0.05)

    async def scenario() -> list[str]:
        rows: list[str] = []

        async def append(text: str) -> None:
            await asyncio.Event().wait()  # (a store that never answers)
            rows.append(text)

        async def step() -> None:
            async with LogShipper(append) as shipper:
                shipper.feed(b"x" * (2 * CHUNK_BYTES))
                await asyncio.Event().wait()

        running = asyncio.ensure_future(step())
        await asyncio.sleep(0)  # sleep-ok: one turn for the step to feed
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        return rows

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == []
