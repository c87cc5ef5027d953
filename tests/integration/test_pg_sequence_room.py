"""PostgreSQL: the id a repaired sequence is set to (`pgsequences.Sequence.top`, the
largest id below `CEILING` with `ROOM` free ids above it) is found by jumps over runs of
ids, not a walk of every row. Checked against a plain reading of its definition on
layouts of a client's ids made to test it (runs near the ceiling, gaps of just `ROOM`
and one more, ids at and past the ceiling, ids of 0 and below), on a real server."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarm_engine.store import open_store
from swarm_engine.store.pgsequences import CEILING, GUARD, ROOM, read


def reference(ids: set[int]) -> int:
    """The largest id in (0, CEILING) whose next id above (or CEILING) is more than ROOM
    away; 0 when none."""
    below = sorted(i for i in ids if 0 < i < CEILING)
    above = CEILING
    for i in reversed(below):
        if above - i > ROOM:
            return i
        above = i
    return 0


@pytest.fixture(scope="module")
def conn(postgres: object) -> Iterator[psycopg.Connection[object]]:
    url = postgres.create_database()  # type: ignore[attr-defined]
    open_store(url).close()  # the schema
    with psycopg.connect(url, autocommit=True) as opened:
        yield opened


ANCHORS = st.sampled_from([CEILING, CEILING - ROOM, CEILING - 2 * ROOM - 1, ROOM + 1, 1, 0])
"""Where a layout's runs of ids are put: near the ceiling and one room or two below it,
near the bottom."""
RUNS = st.lists(
    st.tuples(
        ANCHORS,
        st.integers(-3, 3),  # offset of the run's end from its anchor
        st.integers(1, 40),  # rows in the run
        st.sampled_from([1, 2, ROOM - 1, ROOM, ROOM + 1]),  # spacing between them
    ),
    max_size=4,
)


def layout(runs: list[tuple[int, int, int, int]]) -> set[int]:
    ids: set[int] = set()
    for anchor, offset, count, step in runs:
        end = anchor + offset
        ids.update(end - k * step for k in range(count))
    return {i for i in ids if -(2**62) < i < GUARD}  # what the guard lets in


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(runs=RUNS)
def test_the_room_search_agrees_with_its_definition(
    conn: psycopg.Connection[object], runs: list[tuple[int, int, int, int]]
) -> None:
    ids = layout(runs)
    with conn.transaction(force_rollback=True):  # each layout alone in the table
        conn.execute("DELETE FROM tickets")
        if ids:
            conn.execute(
                "INSERT INTO tickets (id, title, agent_id) OVERRIDING SYSTEM VALUE"
                " SELECT i, 'client', 'echo' FROM unnest(%(ids)s::bigint[]) i",
                {"ids": sorted(ids)},
            )
        (tickets,) = read(conn, ("tickets",))
        assert tickets.top == reference(ids)
