"""The database connector seam: what every store class needs of a database, whichever it is.

Two implementations: `store/sqlite.py` (the embedded default, one file) and
`store/postgres.py` (PostgreSQL, shared by several engine hosts). Each runs the SQL of
its own dialect, kept in named `.sql` files (`store/queries.py`), and translates every
driver error into the `StoreError` tree (`swarm_engine.errors`):

- `StoreBusyError`: transient (a lock held past the busy timeout, a full disk, an I/O
  error, a lost connection, a serialization failure). Callers that must not fail retry it.
- `StoreIntegrityError`: a refused value (a constraint, a number out of range, a NUL
  character where PostgreSQL stores text).
- `StoreError`: anything else.

Rows come back as `Row`: readable by column name or position, with `keys()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

Dialect = Literal["sqlite", "postgresql"]
Params = Mapping[str, Any]
T = TypeVar("T")


class InvalidText(str):
    """A TEXT value that was not valid UTF-8, decoded with replacement characters."""

    __slots__ = ()


class ValueReader(Protocol):
    """One stored value open for reading in pieces (`Database.open_value`)."""

    size: int
    """The value's size in bytes (TEXT as stored: UTF-8)."""

    def read(self, start: int, size: int) -> bytes:
        """Up to `size` bytes from byte `start` (b"" past the end). `StoreError` when the
        row changed meanwhile or the store fails."""
        ...


class Row(Protocol):
    """One result row: `row["status"]`, `row[0]`, `row.keys()`."""

    def keys(self) -> list[str]: ...

    def __getitem__(self, key: int | str, /) -> Any: ...


class Record:
    """A row from a driver that has no row type readable both ways (PostgreSQL's)."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: Mapping[str, int], values: tuple[Any, ...]) -> None:
        self._index = index
        self._values = values

    def keys(self) -> list[str]:
        return list(self._index)

    def __getitem__(self, key: int | str, /) -> Any:
        return self._values[self._index[key] if isinstance(key, str) else key]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __repr__(self) -> str:
        return f"Record({dict(zip(self._index, self._values, strict=True))!r})"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a statement did: the rows it returned and how many rows it changed."""

    rows: list[Row]
    rowcount: int


class Database(Protocol):
    """One logical connection to one database. Not thread-safe: one owner at a time (the
    engine's store thread, or one command)."""

    dialect: Dialect
    where: str
    """How errors name this database: `database /path/tickets.db`, `database postgresql://host/db`."""
    writes: int
    """How many writes the database has taken from this object so far (a count that only
    grows): each transaction committed that wrote (SQLite: every one, its `BEGIN
    IMMEDIATE` took the write lock) and each write statement run on its own, whether it
    changed rows or not. Reads never count: another client's write lock lets them
    through, so only a write shows that the store answers (`StoreGate.stopping`)."""

    def run(self, sql: str, params: Params | None = None) -> Outcome:
        """Execute one statement (in this dialect's SQL, named parameters) and fetch all
        it returns. Raises `StoreError` (see the module doc)."""
        ...

    def one(self, sql: str, params: Params | None = None) -> Row | None: ...

    def all(self, sql: str, params: Params | None = None) -> list[Row]: ...

    def transaction(self) -> AbstractContextManager[Database]:
        """A write transaction, committed at the end, rolled back on any error. Nested
        use is part of the outer one."""
        ...

    def atomic(self, body: Callable[[], T]) -> T:
        """`body()` in one `transaction`, its result returned. PostgreSQL: run again from
        the start when the server rolls it back to break a deadlock or a serialization
        conflict, a few times (`store/rerun.py`), so `body` must be only SQL through this
        database, or else safe to run again (a step made once and skipped by the next
        try, or idempotent; nothing else kept between tries). SQLite: `transaction`.
        Nested in a transaction, part of that one (only its owner may run it again)."""
        ...

    def checks_ignored(self) -> AbstractContextManager[None]:
        """Let one write through on a row another client stored past a CHECK constraint
        (SQLite only: PostgreSQL never stores such a row, so there it does nothing)."""
        ...

    def wait_at_most(self, seconds: float | None) -> None:
        """Let the calls that follow wait at most `seconds` (0: not at all) for a lock
        another client holds, never longer than the busy timeout; None: the busy timeout
        again (SQLite: the connection's busy timeout; PostgreSQL: each pooled
        connection's `lock_timeout`, set as it is lent, at least 1 ms)."""
        ...

    def give_up_when(self, give_up: Callable[[], bool] | None) -> None:
        """From now on (None: no longer), a call that waits for a lock another client
        holds stops waiting once `give_up()` says so, within a quarter of a second, its
        lock error raised (`StoreBusyError`) as after the busy timeout: for a caller whose
        thread cannot be cancelled (a server that stops: `api/logs.py`). SQLite: each
        statement outside a transaction; PostgreSQL: nothing (a read there waits for a
        lock only behind DDL, and at most `lock_timeout`)."""
        ...

    def open_value(
        self, table: str, column: str, rowid: int
    ) -> AbstractContextManager[ValueReader | None]:
        """One TEXT or BLOB value (`column` of `table`'s row `rowid`) open for reading in
        pieces, never loaded whole; None when there is no such row. SQLite only
        (incremental blob I/O: SQL loads a value whole to read any of it); PostgreSQL
        slices a value in SQL instead, so there it raises `StoreError`."""
        ...

    def close(self) -> None: ...
