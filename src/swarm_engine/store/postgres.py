"""PostgreSQL: one database shared by the engines of several hosts (docs/scale-out.md).

Driver psycopg 3 with a `psycopg_pool.ConnectionPool`; the engine calls the store on its
store thread (`engine/gate.py`), so no round trip ever blocks its event loop. Every
connection is set up alike: UTC, a `lock_timeout` equal to the busy timeout (a lock held
longer is `StoreBusyError`, as SQLite's busy timeout is), and rows decoded exactly as the
SQLite store returns them: timestamps as UTC ISO-8601 text with milliseconds and `Z`,
JSON columns as their JSON text.

Migrations are numbered `.sql` files in `store/sql/postgresql/<schema>/`, applied in
one transaction under an advisory lock; table `swarm_schema` holds each schema's number.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg.errors
import psycopg_pool
from psycopg.types.datetime import TimestamptzLoader
from psycopg.types.string import TextLoader

from swarm_engine.errors import (
    StoreBusyError,
    StoreError,
    StoreIntegrityError,
    StoreRolledBackError,
    StoreUnreachableError,
)
from swarm_engine.store import pgsequences
from swarm_engine.store.db import Dialect, Outcome, Params, Record, Row, T, ValueReader
from swarm_engine.store.errortext import bounded_params
from swarm_engine.store.rerun import rerun
from swarm_engine.store.timestamps import UnheldInstant

POOL_MAX = 4
CONNECT_TIMEOUT = 10.0
IDLE_IN_TRANSACTION_MS = 60_000
"""`idle_in_transaction_session_timeout` of each connection, unless the server, the
database, the role or the URL's `options` already set one: a client that stops sending
inside a transaction (a frozen process, a network cut that leaves the socket open) holds
its row locks at most this long before the server ends its session and rolls it back,
instead of blocking every writer of those rows until it resumes. The longest a
transaction of ours waits on its own work between statements is a lease reclaim's fence
(stopping VMs), well under this."""
SESSION_LIMITS_MIN_MS = 1_000
"""The least `idle_in_transaction_session_timeout` (and PostgreSQL 17's
`transaction_timeout`) a store may be given by the server, the database, the role or the
URL (0, no limit, is fine). The statements of one of its transactions follow each other
within milliseconds; below a second, the server would end sessions in the middle of
transactions that are only doing their work, and every write would fail as a busy store
and be retried in vain until `busy_timeout`. `connect` refuses such a setting in one line
instead. (A value of a few seconds works, but a lease reclaim that stops VMs between two
of its statements may outlast it and be run again: keep it at a minute or more.)"""
SESSION_LIMITS = ("idle_in_transaction_session_timeout", "transaction_timeout")
MIGRATION_LOCK = 0x5357_4D01  # pg_advisory_xact_lock key: "SWM" 1
SEQUENCE_REPAIRS = 3
"""How many times one statement repairs a wedged id sequence and runs again (another
client may wedge it again in between, as SQLite's `store/sqlite.py` allows for too)."""
WRITE_TAGS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE"})
"""The command tags (`cursor.statusmessage`) of a statement that writes: one the server
ran counts as a write it took (`Database.writes`), whatever rows it changed."""
WRITES = re.compile(r"\b(INSERT|UPDATE)\b", re.IGNORECASE)
"""A statement that may take an id (an insert, or an update whose trigger writes a
`ticket_events` row): run so that a wedged id sequence can be repaired and it run again."""
READS = re.compile(r"\s*(SELECT|WITH)\b", re.IGNORECASE)
CHANGES = re.compile(
    r"\b(INSERT|UPDATE|DELETE|nextval|setval|pg_notify|pg_advisory\w*|pg_terminate\w*)\b",
    re.IGNORECASE,
)


def _only_reads(sql: str) -> bool:
    """Whether running `sql` twice is as running it once: a query that reads and names
    nothing that changes a row, a sequence or a lock (`store/postgres.py`'s own queries;
    when in doubt, not)."""
    return READS.match(sql) is not None and CHANGES.search(sql) is None


DRAWS = re.compile(
    r"\bINSERT\s+INTO\s+(?:" + "|".join(pgsequences.ID_TABLES) + r")\b|\bUPDATE\s+tickets\b",
    re.IGNORECASE,
)
"""A statement that draws an id by the store's schema: an insert into an id table, or an
update of `tickets` (its status trigger inserts a `ticket_events` row). Only these run
under a savepoint in a transaction (`_write`); the other writes (`vms`, `engines`,
updates of runs and steps, `SELECT ... FOR UPDATE`) take none."""
SAVEPOINT = "swarm_write"


_FAILED = psycopg.pq.TransactionStatus.INERROR


class IsoTimestampLoader(TimestamptzLoader):
    """`timestamptz` as the text SQLite stores: `2026-12-01T04:41:45.123Z`. A value
    Python cannot hold (infinite, before year 1, after 9999) is `UnheldInstant`, the
    server's text: never an error of the whole statement, whose other rows are fine."""

    def load(self, data: Any) -> str:  # type: ignore[override]
        try:
            value = super().load(data)
        except psycopg.DataError:
            return UnheldInstant(bytes(data).decode("utf-8", errors="replace"))
        if not isinstance(value, datetime):
            return str(value)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _record_rows(cursor: Any) -> Any:
    names = [c.name for c in cursor.description or ()]
    index = {name: i for i, name in enumerate(names)}

    def make(values: Sequence[Any]) -> Record:
        return Record(index, tuple(values))

    return make


def _configure(conn: psycopg.Connection[Any], lock_timeout_ms: int) -> None:
    conn.adapters.register_loader("timestamptz", IsoTimestampLoader)
    conn.adapters.register_loader("jsonb", TextLoader)
    conn.adapters.register_loader("json", TextLoader)
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute(f"SET lock_timeout = {lock_timeout_ms}")
    source = conn.execute(
        "SELECT source FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'"
    ).fetchone()
    if source is not None and source[0] == "default":  # nobody chose: ours (see the constant)
        conn.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}")


def translate(exc: BaseException, where: str) -> StoreError:
    """A driver or pool error as the `StoreError` to raise (the caller chains it), on one
    line: the server's primary message only, never its `LINE n:` query text and caret,
    `DETAIL:`, `HINT:` or `CONTEXT:` lines."""
    text = " ".join(_first_line(exc).split()) or type(exc).__name__
    if isinstance(
        exc,
        psycopg.IntegrityError
        | psycopg.DataError
        | psycopg.errors.RaiseException,  # a trigger's RAISE EXCEPTION: refused, as SQLite's
    ):  # RAISE(ABORT) is (a write another client's rule does not allow)
        return StoreIntegrityError(f"{where}: {text}")
    if isinstance(exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure):
        return StoreRolledBackError(f"{where} is unavailable for now: {text}")  # (rerun.py)
    if isinstance(
        exc,
        psycopg.OperationalError  # lost connection, lock/statement timeout, admin shutdown
        | psycopg.errors.TransactionRollback  # the rest of class 40 (not run again)
        | psycopg.errors.IdleInTransactionSessionTimeout  # 25P03: our session was ended
        | psycopg.errors.TransactionTimeout  # 25P04 (PostgreSQL 17): likewise
        | psycopg_pool.PoolTimeout
        | psycopg.errors.InsufficientResources  # disk full, too many connections
        | psycopg.InterfaceError,
    ):
        return StoreBusyError(f"{where} is unavailable for now: {text}")
    return StoreError(f"{where}: {text}")


def _first_line(exc: BaseException) -> str:
    """What went wrong, without what PostgreSQL adds after it on later lines."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if isinstance(primary, str) and primary.strip():
        return primary
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else ""


class PostgresDatabase:
    """A pool of connections to one PostgreSQL database, in autocommit mode (explicit
    transactions only). A transaction pins one connection to the calling thread."""

    dialect: Dialect = "postgresql"

    def __init__(
        self, pool: psycopg_pool.ConnectionPool[Any], where: str, lock_timeout_ms: int
    ) -> None:
        self.pool = pool
        self.where = where
        self._local = threading.local()
        self._busy_ms = lock_timeout_ms  # what each connection is configured with
        self._wait_ms = lock_timeout_ms  # what calls may wait now (`wait_at_most`)
        self._conn_ms: weakref.WeakKeyDictionary[psycopg.Connection[Any], int] = (
            weakref.WeakKeyDictionary()
        )
        self._ms_lock = threading.Lock()
        self.writes = 0
        """Writes the server took from this pool (`Database.writes`): transactions
        committed that ran a write statement, write statements run on their own, and id
        sequences repaired; counted under `_ms_lock` (any thread may write)."""

    def _capped(self, conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
        """`conn`, its `lock_timeout` made what calls may wait now (outside a transaction
        only: a `SET` in one that rolls back would be undone)."""
        with self._ms_lock:
            want, has = self._wait_ms, self._conn_ms.get(conn, self._busy_ms)
        if want != has:
            conn.execute(f"SET lock_timeout = {want}")
            with self._ms_lock:
                self._conn_ms[conn] = want
        return conn

    def _pinned(self) -> psycopg.Connection[Any] | None:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        return conn

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection that answers: each one taken from the pool is checked
        first (one round trip), and one found broken (the server restarted, or ended it:
        `pg_terminate_backend`) is handed back, which discards it and has the pool make a
        new one, and the next is taken at once. (The pool's own `check` slept 1, 2, 4 s
        between broken ones: with every pooled connection ended at once a call waited up
        to 7 s, a lease renewal past its lease.) After `POOL_MAX` broken ones the next is
        used unchecked: a new one, or the statement fails as busy."""
        for _ in range(POOL_MAX):
            with self.pool.connection(timeout=CONNECT_TIMEOUT) as conn:
                try:
                    psycopg_pool.ConnectionPool.check_connection(conn)
                except psycopg.Error:
                    continue  # (broken: the pool discards it as it is handed back)
                yield conn
                return
        with self.pool.connection(timeout=CONNECT_TIMEOUT) as conn:
            yield conn

    def run(self, sql: str, params: Params | None = None) -> Outcome:
        """One statement: in the transaction this thread holds, or else on its own
        (autocommit), run again from the start when PostgreSQL rolls it back to break a
        deadlock or a serialization conflict (`store/rerun.py`)."""
        pinned = self._pinned()
        if pinned is not None:
            try:
                return self._write(pinned, sql, params, in_transaction=True)
            except psycopg.Error as exc:
                raise translate(exc, self.where) from exc
        return rerun(lambda: self._run_alone(sql, params), self._wait_ms)

    def _run_alone(self, sql: str, params: Params | None) -> Outcome:
        """One statement on its own; a read whose connection the server ended under it
        (`pg_terminate_backend`, a restart) is run once more, on another connection (a
        write is not: whether it was committed before the end is unknown)."""
        for tries_left in (1, 0):
            conn: psycopg.Connection[Any] | None = None
            try:
                with self._connection() as conn:
                    return self._write(self._capped(conn), sql, params, in_transaction=False)
            except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
                ended = isinstance(exc, psycopg.OperationalError) and bool(conn and conn.broken)
                if tries_left and ended and _only_reads(sql):
                    continue
                raise translate(exc, self.where) from exc
        raise AssertionError("unreachable")

    def _write(
        self,
        conn: psycopg.Connection[Any],
        sql: str,
        params: Params | None,
        *,
        in_transaction: bool,
    ) -> Outcome:
        """`_execute`; a write that fails because another client wedged an id sequence
        (`nextval` at its limit, SQLSTATE 2200H; or a unique violation of an id table's
        primary key, 23505, as a sequence behind a client's row hands out an id in use)
        is run once more after the sequence is repaired (`pgsequences.repair`). A unique
        violation of any other constraint is raised as it is. In a transaction, a write that draws an id
        (`DRAWS`) runs after a savepoint, rolled back to when it fails, so that failing it
        does not end the transaction. One round trip per such write: the savepoint of the
        transaction's previous one is released in the same query (`_savepoint`), and the
        last is released by the commit (docs/benchmarks.md measures what it costs)."""
        if not WRITES.search(sql):
            return self._execute(conn, sql, params)
        guarded = in_transaction and DRAWS.search(sql) is not None
        for attempt in range(SEQUENCE_REPAIRS + 1):
            try:
                if guarded:
                    self._savepoint(conn)
                return self._execute(conn, sql, params)
            except psycopg.Error as exc:
                tables = self._wedged_by(exc, in_transaction=in_transaction)
                if not tables or attempt == SEQUENCE_REPAIRS or (in_transaction and not guarded):
                    if guarded and conn.info.transaction_status == _FAILED:
                        with contextlib.suppress(psycopg.Error):  # the rest of it stands
                            conn.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
                    raise
                if guarded:
                    conn.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
                pgsequences.repair(conn, self.where, tables)  # (none wedged now: another engine
                # repaired it meanwhile, or it is not ours: run again all the same, bounded)
        raise AssertionError("unreachable")

    @staticmethod
    def _wedged_by(exc: psycopg.Error, *, in_transaction: bool) -> tuple[str, ...]:
        """The id tables whose sequences to repair for a write that failed with `exc`:
        none when it is not a wedged sequence's error."""
        if isinstance(exc, psycopg.errors.SequenceGeneratorLimitExceeded):
            return pgsequences.failed_tables(exc) if in_transaction else pgsequences.ID_TABLES
        table = pgsequences.collided_table(exc)  # an id in use: its sequence may be behind
        return () if table is None else (table,)

    def _savepoint(self, conn: psycopg.Connection[Any]) -> None:
        """Set this transaction's savepoint before a write: the previous one (at most one
        is open) released in the same round trip, so a transaction of many writes holds
        one subtransaction, not one per write."""
        if getattr(self._local, "savepoint", False):
            conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}; SAVEPOINT {SAVEPOINT}".encode())
        else:
            conn.execute(f"SAVEPOINT {SAVEPOINT}".encode())
            self._local.savepoint = True

    def lower_raised_sequences(self) -> list[str]:
        """Repair each id sequence another client wedged (`pgsequences`): by a running
        engine every heartbeat interval, a read when none is. The tables repaired (run
        again when PostgreSQL rolls the repair back: `store/rerun.py`)."""
        return rerun(self._lower_raised_sequences, self._wait_ms)

    def _lower_raised_sequences(self) -> list[str]:
        try:
            with self._connection() as conn:
                conn = self._capped(conn)
                if not any(s.wedged for s in pgsequences.read(conn)):
                    return []
                repaired = pgsequences.repair(conn, self.where)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise translate(exc, self.where) from exc
        self._count_write()
        return repaired

    def _execute(self, conn: psycopg.Connection[Any], sql: str, params: Params | None) -> Outcome:
        with conn.cursor(row_factory=_record_rows) as cur:
            cur.execute(sql, dict(bounded_params(params)) if params else {})  # (errortext.py)
            rows: list[Row] = cur.fetchall() if cur.description else []
            if (cur.statusmessage or "").split(" ", 1)[0] in WRITE_TAGS:
                if self._pinned() is conn:  # counted when its transaction commits
                    self._local.wrote = True
                else:
                    self._count_write()
            return Outcome(rows, cur.rowcount)

    def _count_write(self) -> None:
        with self._ms_lock:
            self.writes += 1

    def script(self, sql: str) -> None:
        """Run several statements as given (no parameters; a migration)."""
        try:
            conn = self._pinned()
            assert conn is not None, "a script runs in a transaction"
            conn.execute(sql.encode(), None)  # bytes: sent as is, `%` untouched
        except psycopg.Error as exc:
            raise translate(exc, self.where) from exc

    def one(self, sql: str, params: Params | None = None) -> Row | None:
        rows = self.run(sql, params).rows
        return rows[0] if rows else None

    def all(self, sql: str, params: Params | None = None) -> list[Row]:
        return self.run(sql, params).rows

    @contextmanager
    def transaction(self) -> Iterator[PostgresDatabase]:
        """BEGIN ... COMMIT on one pooled connection, rolled back on any error."""
        if self._pinned() is not None:
            yield self
            return
        try:
            with (
                self._connection() as conn,
                self._capped(conn).transaction(),
            ):
                self._local.conn = conn
                self._local.savepoint = False
                self._local.wrote = False
                try:
                    yield self
                finally:
                    self._local.conn = None
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise translate(exc, self.where) from exc
        if self._local.wrote:  # committed
            self._count_write()

    def atomic(self, body: Callable[[], T]) -> T:
        """`body()` in one transaction (`transaction`); when PostgreSQL rolls it back to
        break a deadlock or a serialization conflict, run again from the start, a few
        times (`store/rerun.py`). Inside a transaction this thread holds already, part of
        that one (whose owner decides)."""
        if self._pinned() is not None:
            return body()

        def once() -> T:
            with self.transaction():
                return body()

        return rerun(once, self._wait_ms)

    @contextmanager
    def checks_ignored(self) -> Iterator[None]:
        yield  # PostgreSQL never stores a row that breaks a CHECK

    def wait_at_most(self, seconds: float | None) -> None:
        # PostgreSQL's lock_timeout 0 means no limit: the least cap is 1 ms
        ms = self._busy_ms if seconds is None else min(self._busy_ms, max(1, int(seconds * 1000)))
        with self._ms_lock:
            self._wait_ms = ms

    def give_up_when(self, give_up: Callable[[], bool] | None) -> None:
        pass  # (see `Database.give_up_when`)

    def open_value(
        self, table: str, column: str, rowid: int
    ) -> AbstractContextManager[ValueReader | None]:
        raise StoreError(f"{self.where}: no piecewise read here (PostgreSQL slices a value in SQL)")

    def close(self) -> None:
        self.pool.close()


def connect(url: str, schema: str, *, busy_timeout: float = 10.0) -> PostgresDatabase:
    """Open a pool on `url` and bring `schema` up to date. Raises `StoreError` with one
    line when the server cannot be reached or refuses (the password never in it).

    One direct connection is tried first, so a wrong password, a missing database or a
    malformed URL is one clear line at once, not the pool's retries. Pooled connections
    are checked when lent (a server restart leaves closed ones in the pool)."""
    from swarm_engine.store import redact

    where = f"database {redact(url)}"
    try:  # (autocommit: no transaction of the probe's stays open for a limit to end)
        probe = psycopg.connect(url, connect_timeout=int(CONNECT_TIMEOUT), autocommit=True)
    except psycopg.OperationalError as exc:
        if _no_answer(exc):
            raise StoreUnreachableError(redact(url), _scrub(exc, url)) from None
        raise StoreError(f"cannot connect to {redact(url)}: {_scrub(exc, url)}") from None
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to {redact(url)}: {_scrub(exc, url)}") from None
    try:
        with probe:
            limits = probe.execute(
                "SELECT name, setting, source FROM pg_settings WHERE name = ANY(%s)",
                [list(SESSION_LIMITS)],
            ).fetchall()
    except psycopg.errors.QueryCanceled as exc:  # a statement_timeout of a few ms
        raise StoreError(
            f"{where}: {_scrub(exc, url)} (its statement_timeout, set by the server's "
            "configuration, the database, the role or the URL's options, is too short for "
            "a statement of swarm-engine)"
        ) from None
    except psycopg.Error as exc:
        raise StoreError(f"{where}: {_scrub(exc, url)}") from None
    _refuse_short_session_limits(where, limits)
    lock_ms = max(1, int(busy_timeout * 1000))
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # its retries: not news
    pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
        url,
        min_size=1,
        max_size=POOL_MAX,
        kwargs={"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT)},
        configure=lambda conn: _configure(conn, lock_ms),
        open=False,
        name="swarm-store",
    )
    try:
        pool.open(wait=True, timeout=CONNECT_TIMEOUT)
    except psycopg_pool.PoolTimeout as exc:
        pool.close()
        raise StoreUnreachableError(redact(url), "the server did not answer in time") from exc
    db = PostgresDatabase(pool, where, lock_ms)
    try:
        _migrate(db, schema)
    except BaseException:
        db.close()
        raise
    return db


def _refuse_short_session_limits(where: str, limits: Sequence[tuple[Any, Any, Any]]) -> None:
    """Raise `StoreError` (one line) for a session limit of `SESSION_LIMITS` set above 0 and
    below `SESSION_LIMITS_MIN_MS`; `limits` are `pg_settings` rows (name, setting in
    milliseconds, source)."""
    for name, setting, source in limits:
        try:
            ms = int(setting)
        except (TypeError, ValueError):
            continue
        if 0 < ms < SESSION_LIMITS_MIN_MS:
            chosen = "the URL's options or the session" if source == "client" else source
            raise StoreError(
                f"{where}: {name} is {ms}ms (set by {chosen}): swarm-engine needs at least "
                f"{SESSION_LIMITS_MIN_MS}ms, or 0 (no limit), or the server would end "
                "its sessions in the middle of their transactions"
            )


NO_ANSWER = (
    "connection refused",
    "timeout expired",
    "could not translate host name",
    "no such file or directory",
    "network is unreachable",
    "no route to host",
    "cannot assign requested address",
    "connection timed out",
)
"""What libpq says when no server answered at the address (lowercase): nothing listens
there yet, the name does not resolve yet, or the network is not up."""


def _no_answer(exc: psycopg.OperationalError) -> bool:
    """Whether connecting failed because no server answered, as opposed to a server (or
    something else listening there) that answered and refused: a wrong password, a missing
    database or user, no SSL where it is required, another protocol on the port. libpq
    gives no SQLSTATE for either at connection time, so its message tells them apart: a
    server's own refusal is a `FATAL:` line."""
    text = str(exc).lower()
    return exc.sqlstate is None and "fatal:" not in text and any(p in text for p in NO_ANSWER)


def _scrub(exc: BaseException, url: str) -> str:
    """The driver's message on one line, without the URL's password in any form."""
    from urllib.parse import unquote, urlsplit

    text = " ".join(str(exc).split()) or type(exc).__name__
    secrets: set[str] = set()
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        secrets |= {password, unquote(password)}
    _, _, rest = url.partition("://")
    userinfo = rest.split("?", 1)[0].rpartition("@")[0]
    if ":" in userinfo:
        raw = userinfo.split(":", 1)[1]
        secrets |= {raw, unquote(raw)}
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def _migrate(db: PostgresDatabase, schema: str) -> None:
    from swarm_engine.store.sqlite import migrations

    steps = migrations(schema, "postgresql")
    latest = steps[-1][0] if steps else 0

    def migrate() -> None:
        db.run(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        db.run(
            "CREATE TABLE IF NOT EXISTS swarm_schema"
            " (name text PRIMARY KEY, version integer NOT NULL)"
        )
        row = db.one("SELECT version FROM swarm_schema WHERE name = %(name)s", {"name": schema})
        current = int(row[0]) if row else 0
        if current > latest:
            raise StoreError(
                f"{db.where} has {schema} schema version {current}, newer than this engine"
            )
        for number, sql in steps:
            if number > current:
                db.script(sql)
        if latest > current:
            db.run(
                "INSERT INTO swarm_schema (name, version) VALUES (%(name)s, %(v)s)"
                " ON CONFLICT (name) DO UPDATE SET version = excluded.version",
                {"name": schema, "v": latest},
            )

    db.atomic(migrate)
