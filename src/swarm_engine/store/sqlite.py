"""SQLite: the embedded store. WAL, foreign keys on every connection, a busy timeout.

Migrations are numbered `.sql` files in `store/sql/sqlite/<schema>/`; `PRAGMA
user_version` holds the number applied. Applying them is one `BEGIN IMMEDIATE`
transaction, so two processes opening a fresh database at once never both migrate it.

Text is decoded leniently: another client may have stored bytes that are not UTF-8 in a
TEXT column. Such a value comes back as `InvalidText` (a `str` with U+FFFD for the bad
bytes) so the row decoder can name the field instead of the whole read failing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from swarm_engine.errors import StoreBusyError, StoreError, StoreGoneError, StoreIntegrityError
from swarm_engine.store.db import Dialect, InvalidText, Outcome, Params, Row, T
from swarm_engine.store.dbfile import Identity, file_identity, name_moved, one_name
from swarm_engine.store.errortext import bounded_params
from swarm_engine.store.queries import split_script

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
SETUP_ATTEMPTS = 20
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

FULL_CAUSES = "the disk is full"
"""What SQLITE_FULL means once no AUTOINCREMENT sequence is spent (`spent_sequence`):
transient for the engine (it waits until an operator frees the disk)."""

MAX_ID = 2**63 - 1
"""SQLite's largest rowid: an AUTOINCREMENT table whose sequence holds it refuses every
later insert with SQLITE_FULL, for good."""

ID_GUARD = 2**62
"""Ids above this are refused where they are written unless one past the table's largest
id, and a sequence at or above it and above the largest id is lowered to that id before
an insert (migrations 0007_id_guard.sql, 0008_sequence_guard.sql,
0009_ids_past_the_guard.sql): a jump is refused, counting on by one is not."""

ID_TABLES = ("tickets", "ticket_events", "workflow_runs", "step_executions", "step_logs")
"""The ticket store's AUTOINCREMENT tables."""

SEQUENCE_REFUSED = re.compile(r"(\w+)\.id sequence at or above 2\^62 is refused")
"""The message of a `<table>_sequence_guard` trigger (0009_ids_past_the_guard.sql)."""

SEQUENCE_REPAIRS = 3
WAIT_SLICE_MS = 250
"""Under `give_up_when`, a statement waits for a lock this long at a time, then looks
whether to wait on (`give_up_when`): how late it notices that it should stop."""
"""How many times one statement lowers a raised sequence and runs again (outside a
transaction another client may raise it again in between; inside one it cannot)."""


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
    if _is_lock_error(exc):
        return StoreBusyError(f"{where} is busy: {text}")
    if primary == sqlite3.SQLITE_FULL:  # a spent AUTOINCREMENT: see `spent_sequence`
        return StoreBusyError(f"{where} is unavailable for now: {text} ({FULL_CAUSES})")
    if primary in TRANSIENT_CODES:
        return StoreBusyError(f"{where} is unavailable for now: {text}")
    return StoreError(f"{where}: {text}")


def _is_lock_error(exc: sqlite3.Error) -> bool:
    """Another client holds a lock (its busy timeout waited out)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    return primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or (
        primary is None and "database is locked" in str(exc)  # (an error with no code)
    )


def _bind(params: Params | None) -> dict[str, Any] | tuple[()]:
    """Named parameters for sqlite3: a list becomes JSON text (read with json_each)."""
    if not params:
        return ()
    bound = bounded_params(params)  # error text: one line of at most 500 characters
    return {k: json.dumps(v) if isinstance(v, list | tuple) else v for k, v in bound.items()}


class SQLiteDatabase:
    """One connection to one SQLite file, in autocommit mode (explicit transactions only)."""

    dialect: Dialect = "sqlite"

    def __init__(
        self, conn: sqlite3.Connection, path: Path, busy_timeout: float = BUSY_TIMEOUT_MS / 1000
    ) -> None:
        self.conn = conn
        self.path = path
        self.where = f"database {path}"
        self._in_transaction = False
        self._busy_ms = int(busy_timeout * 1000)
        self._wait_ms = self._busy_ms
        """The busy timeout in force now (`wait_at_most`)."""
        self._give_up: Callable[[], bool] | None = None
        """While set, when a statement outside a transaction stops waiting for a lock
        (`give_up_when`)."""
        self.what = "store"
        """What the file is to users, for errors: `store` or `registry`."""
        self._opened: Identity | None = None
        """The file opened (`pin`), checked before each transaction; None: not checked."""
        self.gone: str | None = None
        """Why the name no longer names the file opened, once seen (`StoreGoneError`)."""
        self.writes = 0
        """Writes the file took from this connection (`Database.writes`): transactions
        committed (`BEGIN IMMEDIATE` took its write lock), and statements outside one that
        write (INSERT, UPDATE, DELETE, REPLACE: those sqlite3 gives a row count)."""

    def pin(self) -> None:
        """From now on, each transaction (and each statement outside one) first checks
        that the database's name still names the file open now (a `stat`), and raises
        `StoreGoneError` for good once it does not."""
        self._opened = file_identity(self.path)

    def _same_file(self) -> None:
        if self.gone is None:
            if self._opened is None:
                return
            why = name_moved(self.path, self._opened)
            if why is None:
                return
            self.gone = f"the {self.what} {self.path} was {why} while in use"
        raise StoreGoneError(self.gone)

    def run(self, sql: str, params: Params | None = None) -> Outcome:
        """Run one statement. An insert refused because another client raised the
        table's id sequence (`sequence_guard`) is run again once the sequence is lowered
        (`_lower_sequence`), in the same transaction: a raised sequence is repaired
        wherever the store meets it, not only when a process opens the store."""
        if not self._in_transaction:
            self._same_file()
        for attempt in range(SEQUENCE_REPAIRS + 1):
            try:
                cur = self._execute(sql, params)
                rows: list[Row] = cur.fetchall()
                if cur.rowcount >= 0 and not self._in_transaction:  # a write, taken
                    self.writes += 1
                return Outcome(rows, cur.rowcount)
            except sqlite3.Error as exc:
                table = self._raised_sequence(exc)
                if table is None or attempt == SEQUENCE_REPAIRS:
                    raise self._translate(exc) from exc
                try:
                    self._lower_sequence(table)
                except sqlite3.Error as again:
                    raise self._translate(again) from again
            except OverflowError as exc:  # a Python int past SQLite's 64 bits
                raise StoreIntegrityError(f"{self.where}: a number is out of range") from exc
        raise AssertionError("unreachable")

    def _execute(self, sql: str, params: Params | None) -> sqlite3.Cursor:
        return self._waiting(lambda: self.conn.execute(sql, _bind(params)))

    def _waiting(self, call: Callable[[], T]) -> T:
        """`call()` (one statement, or a blob's opening); under `give_up_when`, outside a
        transaction, one that meets a lock waits for it `WAIT_SLICE_MS` at a time and is
        made again after each (one that met a lock did nothing), until the busy timeout
        in force has passed in all or the caller gives up (the lock error then, as after
        the timeout)."""
        give_up = self._give_up
        if give_up is None or self._in_transaction or self._wait_ms <= WAIT_SLICE_MS:
            return call()
        deadline = time.monotonic() + self._wait_ms / 1000
        self.conn.execute(f"PRAGMA busy_timeout = {WAIT_SLICE_MS}")
        try:
            while True:
                try:
                    return call()
                except sqlite3.OperationalError as exc:
                    if not _is_lock_error(exc) or time.monotonic() >= deadline or give_up():
                        raise
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {self._wait_ms}")

    def give_up_when(self, give_up: Callable[[], bool] | None) -> None:
        self._give_up = give_up

    def _raised_sequence(self, exc: sqlite3.Error) -> str | None:
        """The ticket-store table whose raised id sequence refused this statement (the
        `sequence_guard` trigger, or SQLite's "full" for a sequence at 2^63 - 1 where that
        guard was dropped), or None for any other error. For "full", only while the
        statement can run again: outside a transaction, or in one SQLite kept."""
        if isinstance(exc, sqlite3.IntegrityError):
            found = SEQUENCE_REFUSED.match(str(exc))
            table = found[1] if found else None
        elif getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL:
            if self._in_transaction and not self.conn.in_transaction:
                return None  # SQLite rolled the transaction back
            table = _full_sequence(self.conn)
        else:
            return None
        return table if table in ID_TABLES else None

    def _lower_sequence(self, table: str) -> None:
        """Lower `table`'s id sequence (at or above `ID_GUARD`, above the largest id) to
        its largest id. Raises `StoreIntegrityError` when that id is the largest SQLite has: a row
        only deleting can undo (put there while the guard was dropped)."""
        t = ID_TABLES[ID_TABLES.index(table)]  # a name of ours, not the error's text
        before = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (t,))
        seq = (before.fetchone() or (0,))[0]
        top = int(self.conn.execute(f"SELECT coalesce(max(id), 0) FROM {t}").fetchone()[0])
        if top >= MAX_ID:
            raise StoreIntegrityError(f"{self.where}: {high_row(t, top)}")
        self.conn.execute(
            "UPDATE sqlite_sequence SET seq = ? WHERE name = ? AND seq >= ?", (top, t, ID_GUARD)
        )
        log.warning(
            "lowered the id sequence of %s from %s to %s (another client raised it)",
            t, seq, top, extra={"table": t, "sequence": seq, "lowered_to": top},
        )  # fmt: skip

    def one(self, sql: str, params: Params | None = None) -> Row | None:
        rows = self.run(sql, params).rows
        return rows[0] if rows else None

    def all(self, sql: str, params: Params | None = None) -> list[Row]:
        return self.run(sql, params).rows

    @contextmanager
    def transaction(self) -> Iterator[SQLiteDatabase]:
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
            raise self._translate(exc) from exc
        self.writes += 1

    def atomic(self, body: Callable[[], T]) -> T:
        """`body()` in one `transaction` (SQLite has no deadlock: its busy timeout waits)."""
        with self.transaction():
            return body()

    def _translate(self, exc: sqlite3.Error) -> StoreError:
        """`translate`, except that SQLITE_FULL from a spent AUTOINCREMENT sequence is a
        write refused over a row (`StoreIntegrityError`: waiting never ends it, and an
        engine fails or passes over the ticket it was writing for), not a busy store."""
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL:
            spent = spent_sequence(self.conn)
            if spent is not None:
                return StoreIntegrityError(f"{self.where}: {spent}")
        return translate(exc, self.where)

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the transaction is gone either way
                self.conn.execute("ROLLBACK")

    @contextmanager
    def checks_ignored(self) -> Iterator[None]:
        self.run("PRAGMA ignore_check_constraints = ON")
        try:
            yield
        finally:
            self.run("PRAGMA ignore_check_constraints = OFF")

    def wait_at_most(self, seconds: float | None) -> None:
        ms = self._busy_ms if seconds is None else min(self._busy_ms, max(0, int(seconds * 1000)))
        if ms != self._wait_ms:
            self.conn.execute(f"PRAGMA busy_timeout = {ms}")
            self._wait_ms = ms

    @contextmanager
    def open_value(self, table: str, column: str, rowid: int) -> Iterator[BlobReader | None]:
        try:
            blob = self._waiting(lambda: self.conn.blobopen(table, column, rowid, readonly=True))
        except sqlite3.Error as exc:
            if not str(exc).startswith("no such rowid"):
                raise translate(exc, self.where) from exc
            blob = None
        if blob is None:
            yield None
            return
        try:
            yield BlobReader(blob, self.where)
        finally:
            with contextlib.suppress(sqlite3.Error):
                blob.close()

    def close(self) -> None:
        self.conn.close()


class BlobReader:
    """A value open with incremental blob I/O: each read takes only the pages it needs
    (and, on one handle, finds them without walking the value from its start again)."""

    def __init__(self, blob: sqlite3.Blob, where: str) -> None:
        self.blob = blob
        self.size = len(blob)
        self.where = where

    def read(self, start: int, size: int) -> bytes:
        if start >= self.size or size <= 0:
            return b""
        try:
            self.blob.seek(start)
            return self.blob.read(size)
        except sqlite3.Error as exc:  # the row changed or went away meanwhile
            raise translate(exc, self.where) from exc


class ChangeProbe:
    """Cheap reads an engine makes on its event loop, on a connection of their own (WAL
    readers never wait for writers; a 50 ms busy timeout bounds the rare exceptions):
    whether another connection committed since the last look (`PRAGMA data_version`, a
    read of shared memory), and whether any ticket is open at all."""

    def __init__(self, path: Path) -> None:
        from swarm_engine.store.queries import load

        self.conn = sqlite3.connect(path, isolation_level=None, timeout=0.05)
        self.conn.execute("PRAGMA query_only = ON")
        self._any_open = load("sqlite", "probe").any_open

    def any_open(self) -> bool:
        """Whether some ticket is `open` (True when that cannot be read right now)."""
        try:
            return self.conn.execute(self._any_open).fetchone() is not None
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


def spent_sequence(conn: sqlite3.Connection) -> str | None:
    """Why inserts fail for good when an AUTOINCREMENT sequence holds the largest id (one
    line naming the table and what to do), or None when none does (or it cannot be read)."""
    table = _full_sequence(conn)
    if table is None:
        return None
    if table not in ID_TABLES:
        return high_row(table[:64], MAX_ID)
    try:
        top = int(conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0])
    except sqlite3.Error:
        top = MAX_ID
    if top >= MAX_ID:
        return high_row(table, top)
    return (
        f"table {table!r} has its AUTOINCREMENT sequence at {MAX_ID} (set by another"
        f" client; no row has such an id): the next write of this store lowers it"
    )


def _full_sequence(conn: sqlite3.Connection) -> str | None:
    """The table whose AUTOINCREMENT sequence holds the largest id, or None."""
    try:
        row = conn.execute(
            "SELECT name FROM sqlite_sequence WHERE seq >= ? ORDER BY name LIMIT 1", (MAX_ID,)
        ).fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


def high_row(table: str, top: int) -> str:
    """Why `table` takes no new row: it holds one with id `top`, the largest SQLite has
    (written while its guard was dropped). One line naming the table, the row and what
    to do."""
    return (
        f"table {table!r} has spent its AUTOINCREMENT ids (a row with id {top} was written"
        f" into it; no insert can succeed): delete the row with id {top} from it;"
        " the next write of this store lowers the sequence"
    )


SEQUENCES_HIGH = "SELECT name FROM sqlite_sequence WHERE seq >= :guard"


def _above_top(table: str) -> str:
    """A read: whether `table`'s sequence is above its largest id (`table`: of ours)."""
    return (
        "SELECT 1 FROM sqlite_sequence WHERE name = :t"
        f" AND seq > (SELECT coalesce(max(id), 0) FROM {table})"
    )


def repair_sequences(db: SQLiteDatabase) -> list[str]:
    """Lower each ticket-store AUTOINCREMENT sequence at or above `ID_GUARD` to its
    table's largest id (SQLite keeps a sequence's maximum after the row that set it is
    deleted; another client may raise it): at open, and by a running engine every
    heartbeat interval, so an outside writer's inserts are refused only meanwhile. A read
    first, so the common case writes nothing. Returns the tables lowered."""
    high = {str(r[0]) for r in db.all(SEQUENCES_HIGH, {"guard": ID_GUARD})}
    # our names only; not one whose largest id is itself that high (nothing to lower:
    # the guard names that row), so such a table costs a read a round, not a write
    tables = [t for t in ID_TABLES if t in high and db.one(_above_top(t), {"t": t})]
    lowered = []
    with contextlib.ExitStack() as stack:
        if tables:
            stack.enter_context(db.transaction())
        for table in tables:  # (seq may be any value a client wrote: compared in SQL)
            done = db.run(
                f"UPDATE sqlite_sequence SET seq = (SELECT coalesce(max(id), 0) FROM {table})"
                f" WHERE name = '{table}' AND seq > (SELECT coalesce(max(id), 0) FROM {table})"
            )
            if done.rowcount:
                lowered.append(table)
    if lowered:  # one line however many (a command prints it before its output)
        log.warning(
            "lowered the id sequence of %s to %s largest id (another client raised %s)",
            ", ".join(lowered),
            "its" if len(lowered) == 1 else "each table's",
            "it" if len(lowered) == 1 else "them",
            extra={"tables": lowered},
        )
    return lowered


def migrations(schema: str, dialect: Dialect = "sqlite") -> list[tuple[int, str]]:
    """The numbered migrations of `schema` ('tickets' or 'registry') for `dialect`."""
    folder = Path(__file__).with_name("sql") / dialect / schema
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), entry.read_text(encoding="utf-8")))
    return sorted(found)


def connect(
    path: Path,
    schema: str,
    *,
    busy_timeout: float = BUSY_TIMEOUT_MS / 1000,
    give_up: Callable[[], bool] | None = None,
) -> SQLiteDatabase:
    """Open (creating if needed) the database at `path` and bring its schema up to date.
    With `give_up`, its calls give up waiting for a lock once it says so
    (`SQLiteDatabase.give_up_when`), opening's own included.

    Raises `StoreError` when the file cannot be opened or is not a usable database,
    `StoreBusyError` when it stays locked past `SETUP_ATTEMPTS` tries (with `give_up`:
    past the busy timeout, or once `give_up()` says so).
    """
    one_name(path)
    full_ms = int(busy_timeout * 1000)
    setup_ms = full_ms if give_up is None else min(full_ms, WAIT_SLICE_MS)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            path, timeout=setup_ms / 1000, isolation_level=None, check_same_thread=False
        )
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    conn.text_factory = decode_text
    db = SQLiteDatabase(conn, path, busy_timeout)
    deadline = time.monotonic() + busy_timeout
    attempt = 0
    while True:
        try:
            conn.execute(f"PRAGMA busy_timeout = {setup_ms}")
            conn.execute("PRAGMA foreign_keys = ON")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            _migrate(db, schema, path)
            if schema == "tickets":
                repair_sequences(db)
            one_name(path)  # again: a link made while it opened
            db.what = "store" if schema == "tickets" else schema
            db.pin()
            conn.execute(f"PRAGMA busy_timeout = {full_ms}")
            db.give_up_when(give_up)
            return db
        except (sqlite3.OperationalError, StoreBusyError) as exc:
            # switching a brand-new file to WAL needs a moment alone with it; when many
            # processes open it at once, some are told "locked" without waiting: retry
            # (with `give_up`, a lock is waited for a slice at a time, as by its calls)
            attempt += 1
            if give_up is None:
                waits_on = attempt < SETUP_ATTEMPTS
            else:
                waits_on = time.monotonic() < deadline and not give_up()
            if "locked" not in str(exc) or not waits_on:
                conn.close()
                if isinstance(exc, StoreError):
                    raise
                raise translate(exc, f"database {path}") from exc
            time.sleep(0.01 * min(attempt, 5))
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"database {path} is not usable: {exc}") from exc
        except StoreError:
            conn.close()
            raise


def _migrate(db: SQLiteDatabase, schema: str, path: Path) -> None:
    steps = migrations(schema)
    latest = steps[-1][0] if steps else 0
    found = db.conn.execute("PRAGMA user_version").fetchone()[0]
    if found > latest:
        raise StoreError(f"{path} has schema version {found}, newer than this engine")
    if found == latest:
        return
    with db.transaction():
        current = db.conn.execute("PRAGMA user_version").fetchone()[0]
        if current > latest:
            raise StoreError(f"{path} has schema version {current}, newer than this engine")
        for number, sql in steps:
            if number > current:
                for statement in split_script(sql):
                    db.run(statement)
                db.run(f"PRAGMA user_version = {number}")
