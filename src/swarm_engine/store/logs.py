"""Live step logs: `step_logs` holds each step's log in chunks, written as the step runs.

Any client may write a row, so a chunk may hold anything: 200 MB, bytes that are not
UTF-8, a BLOB. Reading is bounded whatever the rows hold: `after` returns *pieces* of
chunks, each at most `PIECE_BYTES` of the stored value, about `BATCH_BYTES` per call. A
chunk longer than a piece comes as several, read by byte offset without the value ever
being loaded whole: on SQLite with incremental blob I/O (`Database.open_value`; SQL's
`length` or `substr` would load it), on PostgreSQL by the `after` query, which slices the
value's UTF-8 on the server. A reader goes on where the last piece left off
(`LogPiece.resume`), in the same call's terms: `after(ids, *piece.resume)`.

Pieces are cut between characters and each is decoded as UTF-8 with U+FFFD for bytes
that are not UTF-8, so the pieces of a chunk, joined, are exactly the whole value so
decoded (a BLOB's bytes too).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from swarm_engine.store.db import Database, Row
from swarm_engine.store.queries import load
from swarm_engine.store.tickets import BEFORE_ALL, MAX_ID, MIN_ID, first_after

MiB = 1024 * 1024
PIECE_BYTES = 1 * MiB
"""The most one piece holds, in bytes of the stored value. A chunk the engine writes is
at most `engine.logship.ROW_BYTES` (256 KiB) of log, its UTF-8 at most three times that
(where bytes that were not UTF-8 became U+FFFD): always one piece."""
BATCH_BYTES = 8 * MiB
"""`after` stops once its pieces hold this many bytes (so it returns at most this plus one
piece; at least one piece when there is any)."""
MAX_OFFSET = 2**31 - 2
"""No stored value is longer (SQLite's limit is 1e9 bytes, PostgreSQL's 1 GiB): an offset
past it reads as the end of the chunk."""


@dataclass(frozen=True, slots=True)
class LogPiece:
    """One piece of a stored chunk, in order. `start` and `end` are byte offsets in the
    chunk's stored value (its UTF-8; a BLOB's bytes); `last` says the piece ends its chunk
    (a chunk of at most `PIECE_BYTES` is one piece: `start` 0, `last`)."""

    id: int
    step_execution_id: int
    data: str
    start: int
    end: int
    last: bool

    @property
    def resume(self) -> tuple[int, int]:
        """Where the log goes on after this piece, as `LogStore.after`'s (`after`,
        `start`): (this chunk, 0) once it is done, else (this chunk, `end`)."""
        return (self.id, 0) if self.last else (self.id, self.end)


class LogStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.q = load(db.dialect, "logs")

    def append(self, step_execution_id: int, data: str) -> int | None:
        """Store one chunk of a step's log; its id, or None when the step's attempt no
        longer holds its ticket (nothing is stored then)."""
        row = self.db.one(self.q.append, {"step_execution_id": step_execution_id, "data": data})
        return int(row[0]) if row else None

    def after(
        self,
        step_execution_ids: Iterable[int],
        after: int = BEFORE_ALL,
        limit: int = 500,
        *,
        start: int = 0,
        budget: int = BATCH_BYTES,
        piece: int = PIECE_BYTES,
        run: tuple[int, str | None] | None = None,
    ) -> list[LogPiece]:
        """The log of these steps after a position, oldest first, as `LogPiece`s: when
        `start` is 0, the chunks with an id above `after` (`BEFORE_ALL`, the default: all
        of them, ids of 0 and below too); else the rest of chunk `after`
        from byte `start`, then the chunks after it (`LogPiece.resume` gives the position
        after a piece). At most `limit` chunks, each in pieces of at most `piece` bytes
        (>= 4), and only until the pieces hold `budget` bytes: memory holds at most
        `budget` + `piece` bytes of log (and their text), whatever the rows hold. Empty
        when there is nothing after the position. `StoreError` when the store fails.

        `run` (run id, step id or None) instead of `step_execution_ids`: the log of that
        run's steps (only that step's attempts), however many steps it has."""
        ids = list(step_execution_ids)
        start = max(0, min(start, MAX_OFFSET)) if MIN_ID <= after <= MAX_ID else 0
        first = after if start else first_after(after)
        if (not ids and run is None) or first is None:
            return []
        budget, piece = max(budget, 1), max(piece, 4)  # a piece has room for any character
        args = {"first": first, "resume": after if start else None, "skip": start,
                "limit": limit, "budget": budget, "piece": piece}  # fmt: skip
        if run is None:
            rows = self.db.all(self.q.after, {**args, "step_ids": ids})
        else:
            rows = self.db.all(self.q.after_run, {**args, "run_id": run[0], "step_id": run[1]})
        pieces: list[LogPiece] = []
        used = 0
        for row in rows:
            if used >= budget:
                break
            got = self._pieces(row, start if int(row["id"]) == after else 0, budget - used, piece)
            pieces += got
            used += sum(p.end - p.start for p in got)
            if got and not got[-1].last:
                break  # the budget is spent inside this chunk: the next call goes on in it
        return pieces

    def _pieces(self, row: Row, skip: int, room: int, piece: int) -> list[LogPiece]:
        """Pieces of one listed chunk from byte `skip` until they hold `room` bytes or the
        chunk ends (none when the row is gone). PostgreSQL's come in the row (`data`, a
        short chunk whole; or `part`); SQLite's are read here, a piece at a time."""
        chunk, step = int(row["id"]), int(row["step_execution_id"])
        if row["data"] is not None:
            return [LogPiece(chunk, step, _text(row["data"]), 0, int(row["bytes"]), True)]
        if row["part"] is not None:
            return list(split(chunk, step, bytes(row["part"]), skip, int(row["bytes"]), piece))
        got: list[LogPiece] = []
        with self.db.open_value("step_logs", "data", chunk) as value:
            at = skip
            while value is not None and at - skip < room and not (got and got[-1].last):
                got += split(chunk, step, value.read(at, piece), at, value.size, piece)
                at = got[-1].end
        return got  # none when the row was deleted since it was listed


def split(
    chunk: int, step: int, raw: bytes, skip: int, size: int, piece: int
) -> Iterator[LogPiece]:
    """`raw`, bytes `skip`... of a chunk of `size` bytes, as pieces of at most `piece`
    bytes, each cut between characters (except at the chunk's end): an unfinished
    character at the end of `raw` is left for the next read. One empty last piece when
    nothing is left of the chunk."""
    ends = skip + len(raw) >= size
    if not ends:
        raw = raw[: boundary(raw, len(raw))]
    if not raw:
        yield LogPiece(chunk, step, "", skip, skip, True)
        return
    at = 0
    while at < len(raw):
        cut = len(raw) if len(raw) - at <= piece else boundary(raw, at + piece, at)
        yield LogPiece(
            chunk, step, _text(raw[at:cut]), skip + at, skip + cut, ends and cut == len(raw)
        )
        at = cut


def boundary(data: bytes, at: int, low: int = 0) -> int:
    """A cut at or before `at` (and after `low`) that does not split a UTF-8 character:
    `at` moved back over an unfinished character's bytes (0-3); `at` itself when the
    bytes there are not UTF-8 anyway (they decode to U+FFFD on either side alike)."""
    for back in range(1, min(4, at - low) + 1):
        byte = data[at - back]
        if byte < 0x80:
            return at
        if byte >= 0xC0:  # a lead byte: is its character complete before `at`?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return at - back if back < need and at - back > low else at
    return at


def _text(value: object) -> str:
    """A stored value as text: UTF-8 with U+FFFD for bytes that are not (a BLOB's too)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)
