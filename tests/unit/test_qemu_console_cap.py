"""`console.log` never holds more than `CONSOLE_LOG_MAX` bytes, the line saying the rest
was left out included (it ended 37 bytes past the cap, that line), and holds the whole
console when that fits: checked at the edge, in reads of any size."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from swarm_engine.vm.qemu.console import CONSOLE_LOG_MAX, ConsoleSink


def kept(tmp_path: Path, console: bytes, piece: int, limit: int | None = None) -> bytes:
    """What `console.log` holds once a console of `console` came in reads of `piece`."""
    path = tmp_path / "console.log"

    async def feed() -> None:
        stream = asyncio.StreamReader()
        sink = ConsoleSink(stream, path, limit)
        for at in range(0, len(console), piece):
            stream.feed_data(console[at : at + piece])
        stream.feed_eof()
        await sink.flushed(timeout=60)  # (the stream has ended: it is read at once)

    asyncio.run(feed())
    return path.read_bytes()


@pytest.mark.parametrize("piece", [1 << 16, 4096, 37, 1])
@pytest.mark.parametrize("over", [-1, 0, 1, 2, 36, 37, 38, 5000])
def test_the_console_log_holds_at_most_its_cap_marker_included(
    tmp_path: Path, over: int, piece: int
) -> None:
    limit = CONSOLE_LOG_MAX if piece >= 4096 else 200  # (one byte a read: a small cap)
    console = bytes(i % 251 for i in range(limit + over))
    found = kept(tmp_path, console, piece, None if limit == CONSOLE_LOG_MAX else limit)
    assert len(found) <= limit
    if over <= 0:  # all of it fits: kept whole, no marker
        assert found == console
    else:
        marker = f"\n[console.log ends at {limit} bytes]\n".encode()
        assert found == console[: limit - len(marker)] + marker
        assert len(found) == limit


def test_a_cap_smaller_than_the_marker_still_holds(tmp_path: Path) -> None:
    (tmp_path / "over").mkdir()
    (tmp_path / "fits").mkdir()
    assert kept(tmp_path / "over", b"x" * 100, 7, limit=10) == b"\n[console."
    assert kept(tmp_path / "fits", b"x" * 10, 7, limit=10) == b"x" * 10
