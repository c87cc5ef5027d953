"""The event ids of a live log stream (`Chunk.position`) and how a reconnecting client's
`Last-Event-ID` is read back (`parse_position`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from swarm_engine.service.logs import parse_position
from swarm_engine.store.ids import MAX_ID, MIN_ID


@given(st.integers(MIN_ID, MAX_ID), st.integers(0, MAX_ID))
def test_every_id_the_stream_sends_reads_back_as_itself(chunk: int, end: int) -> None:
    sent = f"{chunk}:{end}" if end else str(chunk)  # as `Chunk.position` writes it
    assert parse_position(sent, MAX_ID) == (chunk, end)


def test_an_end_of_zero_is_no_id_of_the_stream() -> None:
    """`41:0` would say none of chunk 41 was read, yet reads as `41`, the whole chunk (the
    chunk was skipped: tester h-210); the stream never sends it, so it is refused."""
    assert parse_position("41:0", MAX_ID) is None
    assert parse_position("41:00", MAX_ID) is None
    assert parse_position("41", MAX_ID) == (41, 0)
    assert parse_position("41:1", MAX_ID) == (41, 1)
