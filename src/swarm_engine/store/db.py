"""The SQLite connector: runs SQL, and nothing else knows the driver.

Every driver error is translated here into the `StoreError` tree
(`swarm_engine.errors`): a locked database past the busy timeout, a full disk or an I/O
error become `StoreBusyError` (transient: callers that must not fail retry it); a refused
constraint becomes `StoreIntegrityError`; anything else `StoreError`.

Text is decoded leniently: another client may have stored bytes that are not UTF-8 in a
TEXT column. Such a value comes back as `InvalidText` (a `str` with U+FFFD for the bad
bytes) so the row decoder can name the field instead of the whole read failing.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm_engine.errors import StoreBusyError, StoreError, StoreIntegrityError

Row = sqlite3.Row
TRANSIENT_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_CANTOPEN,
    }
)


class InvalidText(str):
    """A TEXT value that was not valid UTF-8, decoded with replacement characters."""

    __slots__ = ()


def decode_text(raw: bytes) -> str:
    """sqlite3 `text_factory`: UTF-8, or `InvalidText` where the bytes are not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidText(raw.decode("utf-8", errors="replace"))


def translate(exc: sqlite3.Error, where: str) -> StoreError:
    """A driver error as the `StoreError` to raise (the caller chains it)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc) or type(exc).__name__
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreIntegrityError(f"{where}: {text}")
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in text:
        return StoreBusyError(f"{where} is busy: {text}")
    if primary in TRANSIENT_CODES:
        return StoreBusyError(f"{where} is unavailable for now: {text}")
    return StoreError(f"{where}: {text}")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a statement did: rows it returned, rows it changed, the last inserted rowid."""

    rows: list[Row]
    rowcount: int
    lastrowid: int | None


class Database:
    """One connection to one SQLite file, in autocommit mode (explicit transactions only).

    Not thread-safe: one owner at a time (the engine's event loop, or one command).
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._in_transaction = False

    def run(self, sql: str, args: Sequence[Any] = ()) -> Outcome:
        """Execute one statement and fetch all it returns."""
        try:
            cur = self.conn.execute(sql, args)
            rows = cur.fetchall()
            return Outcome(rows, cur.rowcount, cur.lastrowid)
        except sqlite3.Error as exc:
            raise translate(exc, f"database {self.path}") from exc
        except OverflowError as exc:  # a Python int past SQLite's 64 bits
            raise StoreIntegrityError(f"database {self.path}: a number is out of range") from exc

    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        rows = self.run(sql, args).rows
        return rows[0] if rows else None

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return self.run(sql, args).rows

    def script(self, statements: Sequence[str]) -> None:
        for statement in statements:
            self.run(statement)

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """`BEGIN IMMEDIATE` ... `COMMIT`, rolled back on any error. Nests as a no-op."""
        if self._in_transaction:
            yield self
            return
        self.run("BEGIN IMMEDIATE")
        self._in_transaction = True
        try:
            yield self
        except BaseException:
            self._in_transaction = False
            self._rollback()
            raise
        self._in_transaction = False
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise translate(exc, f"database {self.path}") from exc

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the transaction is gone either way
                self.conn.execute("ROLLBACK")

    @contextmanager
    def checks_ignored(self) -> Iterator[None]:
        """Let one write through on a row that another client stored past a CHECK
        constraint (so the engine can mark that ticket failed without rewriting it)."""
        self.run("PRAGMA ignore_check_constraints = ON")
        try:
            yield
        finally:
            self.run("PRAGMA ignore_check_constraints = OFF")

    def close(self) -> None:
        self.conn.close()


class ChangeProbe:
    """Cheap reads an engine makes on its event loop, on a connection of their own (WAL
    readers never wait for writers; a 50 ms busy timeout bounds the rare exceptions):
    whether another connection committed since the last look (`PRAGMA data_version`, a
    read of shared memory), and whether any ticket is open at all."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=0.05)
        self.conn.execute("PRAGMA query_only = ON")

    def any_open(self) -> bool:
        """Whether some ticket is `open` (True when that cannot be read right now)."""
        try:
            row = self.conn.execute("SELECT 1 FROM tickets WHERE status = 'open' LIMIT 1")
            return row.fetchone() is not None
        except sqlite3.Error:
            return True

    def version(self) -> int | None:
        """The current data version, or None when it cannot be read right now."""
        try:
            return int(self.conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return None

    def close(self) -> None:
        self.conn.close()
