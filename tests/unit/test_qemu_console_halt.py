"""The console's halt line is seen however QEMU's reads split it (`ConsoleSink.on_halt`):
the serial port's bytes come in pieces of any size, after any flood, and a line split
between two reads was missed (the guest then ran on to its step's timeout)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm_engine.vm.qemu.console import ConsoleSink

LINES = [b"[   12.345678] reboot: System halted\r\n", b"reboot: Power down\r\n"]


def seen_in(pieces: list[bytes], tmp: Path) -> list[str]:
    async def feed() -> list[str]:
        sink = ConsoleSink(asyncio.StreamReader(), tmp / "console.log")
        seen: list[str] = []
        sink.on_halt = seen.append
        for piece in pieces:
            sink._keep_end(piece)  # what `_drain` does with each read
        sink.close()
        return seen

    return asyncio.run(feed())


@given(
    line=st.sampled_from(LINES),
    before=st.integers(0, 70_000),
    cuts=st.lists(st.integers(1, 40), max_size=6),
)
def test_a_halt_line_in_any_pieces_is_seen_once(
    tmp_path_factory: pytest.TempPathFactory, line: bytes, before: int, cuts: list[int]
) -> None:
    data = b"x" * before + line + b"more output\r\n" * 3
    at = sorted({min(c * 3 + before, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *at], [*at, len(data)], strict=True) if data[a:b]]
    said = seen_in(pieces, tmp_path_factory.mktemp("console"))
    assert said == [line.decode().split("] ")[-1].strip()]


def test_a_console_without_the_line_ends_nothing(tmp_path: Path) -> None:
    assert seen_in([b"reboot: System ", b"halt", b"ing soon\r\n", b"Power"], tmp_path) == []
