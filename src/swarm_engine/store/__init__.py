"""The ticket store: tickets, execution records, VMs and engines, in SQLite or PostgreSQL.

`open_store(target)` takes a file path (SQLite, the embedded default) or a
`postgresql://` URL (several engine hosts on one database; docs/scale-out.md). Both give
the same `Store`: the same classes, each dialect's SQL in its own named `.sql` files.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from swarm_engine.errors import ConfigError
from swarm_engine.store.db import Database, Dialect, T
from swarm_engine.store.engines import EngineStore
from swarm_engine.store.logs import LogStore
from swarm_engine.store.rows import Ticket
from swarm_engine.store.runs import RunStore
from swarm_engine.store.tickets import TicketStore
from swarm_engine.store.triggers import TriggerStore
from swarm_engine.store.vms import VMStore

DEFAULT_BUSY_TIMEOUT = 10.0
PG_SCHEMES = ("postgresql://", "postgres://")


@dataclass
class Store:
    db: Database
    tickets: TicketStore
    runs: RunStore
    vms: VMStore
    engines: EngineStore
    logs: LogStore
    triggers: TriggerStore

    @property
    def dialect(self) -> Dialect:
        return self.db.dialect

    def transaction(self) -> AbstractContextManager[Database]:
        """Several store calls as one transaction (all or none); never run again when
        PostgreSQL rolls it back (a busy error then): `atomic` is, where it can be."""
        return self.db.transaction()

    def atomic(self, body: Callable[[], T]) -> T:
        """`body()`, several store calls, as one transaction, run again from its start when
        PostgreSQL rolls it back to break a deadlock (`Database.atomic`): only store calls
        in `body`, nothing else that a second try would do twice (or that it must not:
        what a try made is skipped by the next, or doing it again is harmless)."""
        return self.db.atomic(body)

    def lower_raised_sequences(self) -> list[str]:
        """Lower each id sequence another client raised to 2^62 or more to its table's
        largest id; the tables lowered. SQLite: `sqlite.repair_sequences`. PostgreSQL:
        also put back a sequence's changed parameters (`store/pgsequences.py`)."""
        from swarm_engine.store.sqlite import SQLiteDatabase, repair_sequences

        if self.db.dialect == "postgresql":  # (psycopg imported only then)
            from swarm_engine.store.postgres import PostgresDatabase

            assert isinstance(self.db, PostgresDatabase)
            return self.db.lower_raised_sequences()
        return repair_sequences(self.db) if isinstance(self.db, SQLiteDatabase) else []

    def close(self) -> None:
        self.db.close()


def is_url(target: str | Path) -> bool:
    """Whether `target` names a PostgreSQL database (rather than a SQLite file)."""
    return isinstance(target, str) and target.startswith(PG_SCHEMES)


def redact(url: str) -> str:
    """A database URL fit for logs and errors: the password, in the user part or as a
    `password=` parameter, replaced by `***`. Works on malformed URLs too (a password with
    `/`, `#` or `@` in it, not percent-encoded): everything up to the last `@` of the
    part before the query is taken as user and password."""
    import re

    scheme, sep, rest = url.partition("://")
    if not sep:
        return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", url)
    query = ""
    qmark = rest.find("?", rest.rfind("@") + 1)
    if qmark >= 0:
        rest, query = rest[:qmark], rest[qmark:]
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = re.sub(r"(?i)(password=)[^&\s]*", r"\1***", query)
    return f"{scheme}://{rest}{query}"


def open_database(
    target: str | Path,
    schema: str,
    *,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    give_up: Callable[[], bool] | None = None,
) -> Database:
    """Open (creating and migrating) the `schema` ('tickets' or 'registry') database.

    `target`: a path (SQLite), `sqlite:///abs/path`, or `postgresql://user@host/db`.
    `give_up`: see `Database.give_up_when` (SQLite: its opening's waits too).
    Raises `ConfigError` for a URL of another kind, `StoreError` when it cannot be used.
    """
    if isinstance(target, str):
        if is_url(target):
            from swarm_engine.store.postgres import connect as pg_connect

            return pg_connect(target, schema, busy_timeout=busy_timeout)
        if target.startswith("sqlite:///"):
            target = Path(target.removeprefix("sqlite://"))
        else:
            raise ConfigError(
                f"database URL {redact(target)!r}: use postgresql://..., sqlite:///path or a path"
            )
    from swarm_engine.store.sqlite import connect

    return connect(target, schema, busy_timeout=busy_timeout, give_up=give_up)


def open_store(
    target: str | Path,
    *,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    give_up: Callable[[], bool] | None = None,
) -> Store:
    """Open the ticket store (`give_up`: `open_database`). Raises `StoreError`
    (`ConfigError` for a bad URL)."""
    db = open_database(target, "tickets", busy_timeout=busy_timeout, give_up=give_up)
    return Store(
        db, TicketStore(db), RunStore(db), VMStore(db), EngineStore(db), LogStore(db),
        TriggerStore(db),
    )  # fmt: skip


__all__ = ["Store", "Ticket", "is_url", "open_database", "open_store", "redact"]
