"""SQLite connections and migrations: WAL, foreign keys on every connection, busy timeout.

Migrations are numbered `.sql` files in `store/sql/<schema>/`; `PRAGMA user_version`
holds the number applied. Applying them is one `BEGIN IMMEDIATE` transaction, so two
processes opening a fresh database at once never both migrate it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from swarm_engine.errors import StoreBusyError, StoreError
from swarm_engine.store.db import Database, decode_text, translate

BUSY_TIMEOUT_MS = 10_000
SETUP_ATTEMPTS = 20


def utcnow() -> str:
    """Now as stored: UTC ISO-8601 with milliseconds and a Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def migrations(schema: str) -> list[tuple[int, str]]:
    folder = resources.files("swarm_engine.store") / "sql" / schema
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), entry.read_text()))
    return sorted(found)


def connect(path: Path, schema: str, *, busy_timeout: float = BUSY_TIMEOUT_MS / 1000) -> Database:
    """Open (creating if needed) the database at `path` and bring its schema up to date.

    Raises `StoreError` when the file cannot be opened or is not a usable database,
    `StoreBusyError` when it stays locked past `SETUP_ATTEMPTS` tries.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    conn.text_factory = decode_text
    db = Database(conn, path)
    for attempt in range(SETUP_ATTEMPTS):
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            _migrate(db, schema, path)
            return db
        except (sqlite3.OperationalError, StoreBusyError) as exc:
            # switching a brand-new file to WAL needs a moment alone with it; when many
            # processes open it at once, some are told "locked" without waiting: retry
            if "locked" not in str(exc) or attempt == SETUP_ATTEMPTS - 1:
                conn.close()
                if isinstance(exc, StoreError):
                    raise
                raise translate(exc, f"database {path} is not usable") from exc
            time.sleep(0.01 * (attempt + 1))
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"database {path} is not usable: {exc}") from exc
        except StoreError:
            conn.close()
            raise
    raise AssertionError("unreachable")


def _migrate(db: Database, schema: str, path: Path) -> None:
    steps = migrations(schema)
    latest = steps[-1][0] if steps else 0
    if db.conn.execute("PRAGMA user_version").fetchone()[0] >= latest:
        return
    with db.transaction():
        current = db.conn.execute("PRAGMA user_version").fetchone()[0]
        if current > latest:
            raise StoreError(f"{path} has schema version {current}, newer than this engine")
        for number, sql in steps:
            if number > current:
                db.script(list(_split(sql)))
                db.run(f"PRAGMA user_version = {number}")


def _split(script: str) -> Iterator[str]:
    """Split a migration into statements (sqlite3.complete_statement handles triggers)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        if not buf and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf
            buf = ""
    if buf.strip():
        yield buf
