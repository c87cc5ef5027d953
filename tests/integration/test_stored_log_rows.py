"""`step_logs` rows as any client may write them, of any size and any bytes, read back
bounded on each store: `LogStore.after` hands out pieces of at most `PIECE_BYTES`, about
`BATCH_BYTES` per call, and goes on inside a chunk where the last call left off; joined,
the pieces are exactly what was stored (bytes that are not UTF-8 as U+FFFD). So `logs`,
`logs --follow` and the API never hold a hand-written 200 MB row whole."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import Target
from tests.support.api import sse_events, start_api
from tests.support.cli import env_for, swarm_inproc

from swarm_engine.api.logs import STREAM_PIECE_BYTES as PIECE
from swarm_engine.service.logs import LOG_KEEP_BYTES, as_text, chunks
from swarm_engine.store import Store, open_store
from swarm_engine.store.logs import BATCH_BYTES, PIECE_BYTES, LogPiece

MiB = 1024 * 1024
SETUP = [
    "INSERT INTO tickets (id, title, status, agent_id, error, attempt_id)"
    " VALUES (100, 't', 'failed', 'echo', 'no', 'a1')",
    "INSERT INTO workflow_runs (id, ticket_id, attempt, attempt_id, execution_mode, status)"
    " VALUES (1, 100, 1, 'a1', 'workflow', 'failed')",
    "INSERT INTO step_executions (id, run_id, step_id, agent_name, agent_version, agent_kind,"
    " status, error) VALUES (1, 1, 's1', 'echo', '1', 'echo', 'failed', 'step 1 failed'),"
    " (2, 1, 's2', 'echo', '1', 'echo', 'failed', NULL)",
]


class NotUtf8(bytes):
    """Bytes stored as a TEXT value (SQLite keeps them as they are)."""


Value = str | bytes


def as_stored(value: Value) -> str:
    """What reading a stored value back must give: UTF-8, U+FFFD for bytes that are not."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def write(
    target: Target, statements: Sequence[str], rows: Sequence[tuple[int, Value]] = ()
) -> None:
    """Run `statements`, then insert `rows` (step, value) into step_logs, as an outside
    client does: a str as TEXT, bytes as a BLOB, `NotUtf8` as TEXT holding those bytes."""
    if target.dialect == "sqlite":
        conn = sqlite3.connect(target.target, timeout=30)
        with conn:
            for statement in statements:
                conn.execute(statement)
            for step, value in rows:
                cast = "CAST(? AS TEXT)" if isinstance(value, NotUtf8) else "?"
                conn.execute(
                    f"INSERT INTO step_logs (step_execution_id, data) VALUES (?, {cast})",
                    (step, bytes(value) if isinstance(value, bytes) else value),
                )
        conn.close()
        return
    import psycopg

    with psycopg.connect(str(target.target), autocommit=True) as pg, pg.transaction():
        for statement in statements:
            pg.execute(statement)
        for step, value in rows:
            pg.execute(
                "INSERT INTO step_logs (step_execution_id, data) VALUES (%s, %s)", (step, value)
            )


@pytest.fixture
def store(store_target: Target) -> Iterator[Store]:
    """The store under test, with ticket 100, its run 1 and steps 1 and 2 (no logs)."""
    opened = open_store(store_target.target)
    write(store_target, SETUP)
    try:
        yield opened
    finally:
        opened.close()


def read_all(
    store: Store, steps: list[int], *, limit: int, budget: int, piece: int
) -> list[LogPiece]:
    """Every piece after the start, call by call, checking the bounds of each call."""
    got: list[LogPiece] = []
    after, start = 0, 0
    for _ in range(100_000):
        batch = store.logs.after(steps, after, limit, start=start, budget=budget, piece=piece)
        if not batch:
            return got
        sizes = [p.end - p.start for p in batch]
        assert all(size <= piece for size in sizes), sizes
        assert sum(sizes) <= budget + piece, sizes
        got += batch
        after, start = batch[-1].resume
    raise AssertionError("reading never ended")


def by_chunk(pieces: list[LogPiece]) -> list[str]:
    """Each chunk's text, its pieces joined, checking they follow one another."""
    texts: list[str] = []
    for n, p in enumerate(pieces):
        if n == 0 or pieces[n - 1].last:
            assert p.start == 0, (n, p)
            texts.append(p.data)
        else:
            assert (p.id, p.start) == (pieces[n - 1].id, pieces[n - 1].end), (n, p)
            texts[-1] += p.data
    assert not pieces or pieces[-1].last
    return texts


TEXT = st.characters(blacklist_categories=("Cs",))  # what a client can store as text


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_the_pieces_read_back_are_exactly_what_any_client_stored(
    store: Store, store_target: Target, data: st.DataObject
) -> None:
    """Rows on both sides of the piece size (in characters of 1-4 bytes; on SQLite also
    BLOBs and TEXT that is not UTF-8), read with any piece size, budget and limit: each
    chunk's pieces joined are its stored value, in id order, only the asked step's."""
    piece = data.draw(st.integers(4, 24), label="piece")
    text = st.text(TEXT, max_size=3 * piece)
    if store_target.dialect == "sqlite":
        value: st.SearchStrategy[Value] = st.one_of(
            text, st.binary(max_size=3 * piece), st.binary(max_size=3 * piece).map(NotUtf8)
        )
    else:  # PostgreSQL text holds valid UTF-8 without NUL, nothing else
        value = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                        max_size=3 * piece)  # fmt: skip
    rows = data.draw(st.lists(st.tuples(st.sampled_from([1, 1, 2]), value), max_size=8), "rows")
    write(store_target, ["DELETE FROM step_logs"], rows)
    expected = [as_stored(v) for step, v in rows if step == 1]

    pieces = read_all(
        store,
        [1],
        limit=data.draw(st.integers(1, 4), label="limit"),
        budget=data.draw(st.integers(1, 4 * piece), label="budget"),
        piece=piece,
    )
    assert by_chunk(pieces) == expected
    assert [p.id for p in pieces] == sorted(p.id for p in pieces)
    assert "".join(chunks(store, 1)) == "".join(expected)  # what `logs` prints, default sizes


class Recorder:
    """The store's database, recording the size of every value it hands back."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.dialect = db.dialect
        self.sizes: list[int] = []

    def all(self, sql: str, params: Any = None) -> list[Any]:
        rows: list[Any] = self.db.all(sql, params)
        self.sizes += [size(v) for row in rows for v in row]
        return rows

    @contextmanager
    def open_value(self, *args: Any) -> Iterator[Any]:
        with self.db.open_value(*args) as value:
            if value is None:
                yield None
                return
            real_read = value.read

            def read(start: int, size: int) -> bytes:
                got: bytes = real_read(start, size)
                self.sizes.append(len(got))
                return got

            value.read = read
            yield value


def size(value: Any) -> int:
    """Bytes of a text or binary value (0 for a number or NULL)."""
    if isinstance(value, str):
        return len(value.encode())
    return len(value) if isinstance(value, bytes | bytearray | memoryview) else 0


def test_a_huge_row_is_read_in_bounded_pieces(store: Store, store_target: Target) -> None:
    """Rows of one byte less, exactly and one byte more than a piece (a character straddling
    the cut), and one of 20 MiB: what `logs` prints (`chunks`) is all of it, while no
    value the database hands back and no call's pieces hold more than a batch and a piece."""
    euro = "€" * (PIECE_BYTES // 3)  # 3 bytes each: PIECE_BYTES - 1 bytes
    huge = "<head>\n" + "😀" * (5 * MiB) + "\n<tail>\n"  # 20 MiB of 4-byte characters
    values = [euro, "x" + euro, "xx" + euro, huge, "small\n"]
    assert [len(v.encode()) - PIECE_BYTES for v in values[:3]] == [-1, 0, 1]
    write(store_target, [], [(1, v) for v in values])
    recorder = Recorder(store.logs.db)
    store.logs.db = recorder  # type: ignore[assignment]
    calls: list[int] = []
    real_after = store.logs.after

    def after(*args: Any, **kwargs: Any) -> list[LogPiece]:
        batch = real_after(*args, **kwargs)
        calls.append(sum(p.end - p.start for p in batch))
        assert all(len(p.data.encode()) <= PIECE_BYTES for p in batch)
        return batch

    store.logs.after = after  # type: ignore[method-assign]
    assert "".join(chunks(store, 1)) == "".join(values)
    assert max(recorder.sizes) <= BATCH_BYTES + PIECE_BYTES
    assert max(calls) <= BATCH_BYTES + PIECE_BYTES
    assert len(calls) > len(huge.encode()) // (BATCH_BYTES + PIECE_BYTES)


def test_logs_shows_blobs_and_bytes_that_are_not_utf8_as_replacement_characters(
    tmp_path: Path,
) -> None:
    """SQLite: a BLOB, TEXT that is not UTF-8 and a NUL, as another client may write them:
    `logs` and `logs --follow` print them with U+FFFD (NUL as `\\x00`) and exit 0, and the
    download has them as U+FFFD (NUL as it is)."""
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    target = Target("sqlite", home / "tickets.db", {})
    write(target, SETUP, [(1, b"blob \xff\xfe ok\n"), (1, NotUtf8(b"text \xc3( \xe2\x82\n")),
                          (1, "nul \0 end\n")])  # fmt: skip
    for args in (("logs", "100"), ("logs", "100", "--follow")):
        done = swarm_inproc(home, *args)
        assert done.returncode == 0, done.stderr
        assert "blob \ufffd\ufffd ok\ntext \ufffd( \ufffd\nnul \\x00 end\n" in done.stdout
        assert "Traceback" not in done.stderr
    store = open_store(target.target)
    try:
        _, text = as_text(store, 100)
    finally:
        store.close()
    assert "blob \ufffd\ufffd ok\ntext \ufffd( \ufffd\nnul \0 end\n" in text


def test_the_stream_splits_a_huge_row_and_resumes_inside_it(
    store_target: Target, tmp_path: Path
) -> None:
    """A hand-written row of 2.5 of the stream's pieces (`STREAM_PIECE_BYTES`) comes as
    three events: ids `ID:END`, `ID:END`, `ID`; reconnecting with the first's id gives exactly the rest. The download keeps the
    row's first and last 8 MiB around one line saying what was left out."""
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", **store_target.env).returncode == 0
    row = "".join(f"line {n:07d}\n" for n in range(PIECE * 5 // 26))  # 13 bytes a line
    big = "<big>\n" + "y" * (2 * LOG_KEEP_BYTES + 4 * MiB) + "\n</big>\n"
    write(store_target, SETUP, [(1, row), (1, "after\n"), (2, big)])
    api = start_api(home, **store_target.env)
    try:
        with api.get("/v1/tickets/100/logs/stream?step=s1", stream=True, timeout=60) as got:
            events = [e for e in sse_events(got) if e["event"] == "log"]
        ids = [e["id"] for e in events]
        texts = [json.loads(e["data"])["text"] for e in events]
        chunk = ids[-2]
        assert ids[:-1] == [f"{chunk}:{PIECE}", f"{chunk}:{2 * PIECE}", chunk]
        assert texts[:3] == [row[:PIECE], row[PIECE : 2 * PIECE], row[2 * PIECE :]]
        assert texts[3] == "after\n"
        headers = {"Last-Event-ID": ids[0]}
        with api.get("/v1/tickets/100/logs/stream?step=s1", stream=True, headers=headers,
                     timeout=60) as got:  # fmt: skip
            rest = [e for e in sse_events(got) if e["event"] == "log"]
        assert [e["id"] for e in rest] == ids[1:]

        text = api.get("/v1/tickets/100/logs?step=s2").text
    finally:
        api.stop()
    left_out = len(big) - 2 * LOG_KEEP_BYTES
    head = big[:LOG_KEEP_BYTES]
    assert text.startswith("=== run 1 · step s2 · attempt 1 · failed ===\n" + head + "\n[... ")
    assert f"\n[... {left_out} bytes of this log left out here; all of it:" in text
    assert text.endswith("...]\n" + big[-LOG_KEEP_BYTES:])


PEAK = """
import resource, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
printed = 0
while block := proc.stdout.read(1 << 20):
    printed += len(block)
print(proc.wait(), printed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""
"""Runs a command and prints its exit code, the bytes it printed and its peak RSS: from a
small process of its own, since a child's peak RSS counts the memory of the process it was
forked from (here the test's)."""


@pytest.mark.slow
def test_logs_reads_a_huge_hand_written_row_in_little_memory(tmp_path: Path) -> None:
    """`swarm-engine logs` over one 128 MiB row written with SQL by another client peaks
    within a quarter of the row's size of what it takes over a row of one line (reading
    the row whole took over three times its size)."""
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    size = 128 * MiB
    line = "z" * 63 + "\n"
    write(Target("sqlite", home / "tickets.db", {}), [
        *SETUP,
        f"INSERT INTO step_logs (step_execution_id, data)"
        f" VALUES (1, replace(hex(zeroblob({size // 64})), '00', '{line}'))",
        "INSERT INTO step_logs (step_execution_id, data) VALUES (2, 'one line')",
    ])  # fmt: skip

    def peak(step: str) -> tuple[int, int]:
        done = subprocess.run(
            [sys.executable, "-c", PEAK, sys.executable, "-m", "swarm_engine", "logs", "100",
             "--step", step],
            env=env_for(home), capture_output=True, text=True, check=True, timeout=110,
        )  # fmt: skip
        code, printed, rss = (int(n) for n in done.stdout.split())
        assert code == 0
        return printed, rss

    printed, big_peak = peak("s1")
    assert printed > size
    _, small_peak = peak("s2")
    assert big_peak - small_peak < size // 4, f"peak RSS {big_peak} bytes, {small_peak} small"
