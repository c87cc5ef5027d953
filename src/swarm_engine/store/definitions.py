"""The registry's database: agent and workflow definitions as stored rows.

Validation and packages live in `swarm_engine.registry`; this class only reads and
writes rows (decoded by the registry, since anyone may have written them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from swarm_engine.errors import StoreBusyError, StoreError
from swarm_engine.store.db import Database, Row, T
from swarm_engine.store.queries import load

Table = Literal["agents", "workflows"]
MARK_PIECE = 2**20
"""Bytes of a spec read (or encoded) at a time to tell its mark (`workflow_mark`)."""


class DefinitionStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.q = load(db.dialect, "definitions")

    def builtin_agents(self) -> set[tuple[object, object]]:
        """(name, version) of every agent stored as built in."""
        return {(r[0], r[1]) for r in self.db.all(self.q.builtin_agents)}

    def seed_agents(self, rows: Iterable[dict[str, str]]) -> None:
        """Store built-in agents that are missing (name, version, kind, description, spec)."""
        rows = list(rows)  # (read once: each try writes them all)

        def seed() -> None:  # only SQL: run again if rolled back (store/rerun.py)
            for row in rows:
                self.db.run(self.q.seed_agent, row)

        self.db.atomic(seed)

    def agent(self, name: str, version: str) -> Row | None:
        return self.db.one(self.q.agent, {"name": name, "version": version})

    def workflow(self, name: str, version: str) -> Row | None:
        return self.db.one(self.q.workflow, {"name": name, "version": version})

    def versions(self, table: Table, name: str) -> list[tuple[object, object]]:
        """`(version, its size in bytes)` of each row of `name`: a version over 1 KiB
        (`MAX_NAME_BYTES`) as None (not read)."""
        query = self.q.agent_versions if table == "agents" else self.q.workflow_versions
        return [(r[0], r[1]) for r in self.db.all(query, {"name": name})]

    def agents_named(self, names: list[str]) -> list[Row]:
        """`name`, `version` and `kind` (None over 1 KiB) of every agent named in `names`
        whose version is text of at most 1 KiB: one read for a page of a list."""
        return self.db.all(self.q.agents_named, {"names": names}) if names else []

    def workflows(self) -> list[Row]:
        return self.db.all(self.q.workflows)

    def page(
        self,
        table: Table,
        after: tuple[bytes, bytes] | None,
        limit: int,
        *,
        specs: bool,
        budget: int,
    ) -> list[Row]:
        """At most `limit` rows of `table` after `(name, version)` `after` (None: from the
        first; as UTF-8 bytes, a row's `key_name` and `key_version`: any text a row holds
        is passed back exactly; `ValueError` for bytes no row of this store can hold),
        in that order, of those whose name and version hold at most 1 KiB; each
        with `total` (the running total of the bytes of their specs and descriptions,
        measured in SQL) and `nth` (from 1). `specs`: a row's `spec` and whole
        `description` are read only while `total` stays within `budget` (and for the
        first row whatever it is); else (and always without `specs`) `spec` is None and
        `description` its first 200 characters (`<table>_page` in definitions.sql)."""
        query = self.q.agents_page if table == "agents" else self.q.workflows_page
        name: bytes | str | None = None
        version: bytes | str | None = None
        if after is not None:
            name, version = after
            if self.db.dialect == "postgresql":  # text: UTF-8 without NUL (SQLite: any bytes)
                name, version = (_pg_text(v) for v in after)
        args = {"after_name": name, "after_version": version, "limit": limit,
                "specs": specs, "budget": budget}  # fmt: skip
        return self.db.all(query, args)

    def unread(self, table: Table, offset: int, limit: int) -> list[Row]:
        """At most `limit` rows of `table` whose name or version holds more than 1 KiB,
        from the `offset`-th (sizes and defects only: nothing of them is read whole)."""
        query = self.q.agents_unread if table == "agents" else self.q.workflows_unread
        return self.db.all(query, {"offset": offset, "limit": limit})

    def put_agents(self, rows: Iterable[dict[str, str]]) -> None:
        """Insert or replace agents (name, version, kind, description, spec); the caller
        holds the transaction."""
        for row in rows:
            self.db.run(self.q.put_agent, row)

    def registering(self, body: Callable[[], T]) -> T:
        """`body()` in a write transaction that registers workflows one at a time across
        every client (`lock_workflows`): what is read in it (which workflow owns a trigger
        name) still holds when its writes commit. Rolled back on any error; run again from
        its start when PostgreSQL rolls it back (`Database.atomic`): `body` reads and
        writes the store only."""

        def locked() -> T:
            self.db.run(self.q.lock_workflows)
            return body()

        return self.db.atomic(locked)

    def workflows_seen(self) -> tuple[object, ...]:
        """What changes when the registry changes, whoever wrote it (`workflows_seen`: no
        row is read), with this object's own writes (`Database.writes`)."""
        row = self.db.one(self.q.workflows_seen)
        values = () if row is None else tuple(row[k] for k in row.keys())  # noqa: SIM118
        return (self.db.writes, *values)

    def workflow_keys(self, after: tuple[bytes, bytes] | None, limit: int) -> list[Row]:
        """`name`, `version`, `key_name` and `key_version` of at most `limit` workflows
        rows after `after` (as in `page`), in that order: nothing else is read."""
        name, version = _keyset(self.db.dialect, after)
        args = {"after_name": name, "after_version": version, "limit": limit}
        return self.db.all(self.q.workflow_keys, args)

    def workflow_quiet(self, key: tuple[bytes, bytes], seen: str | None) -> Row | None:
        """`quiet` (1: declares no triggers), `seen` and `spec_bytes` of the row of `key`
        (a `workflow_keys` row's `key_name` and `key_version`); `seen`: what it had when
        found quiet before (see `workflow_quiet`). No spec is handed over."""
        name, version = _keyset(self.db.dialect, key)
        args = {"name": name, "version": version, "seen": seen}
        return self.db.one(self.q.workflow_quiet, args)

    def workflow_head(self, key: tuple[bytes, bytes]) -> Row | None:
        """`spec_bytes`, `created_at` and what `workflow_mark` needs of the row of `key`
        (as `workflow_quiet`), or None when there is none. No spec is handed over."""
        name, version = _keyset(self.db.dialect, key)
        return self.db.one(self.q.workflow_head, {"name": name, "version": version})

    def workflow_mark(self, head: Row) -> tuple[str | None, int]:
        """What tells whether the spec of a workflow row (`head`: its `workflow_head`) is
        the one read before (`read_mark`), and the bytes of it read to tell. PostgreSQL:
        its `xmin` (any write of the row gives it a new one; nothing read). SQLite, which
        keeps no mark of a change (an edit in place may keep its size and created_at): a
        blake2b digest of its spec's text, read in `MARK_PIECE` pieces (never loaded
        whole, never decoded). None: none (a spec over 8 MiB or not text, or the row gone
        or changed while it was read): the caller reads the row."""
        if self.db.dialect == "postgresql":
            return (None if head["mark"] is None else str(head["mark"])), 0
        rowid = head["row_id"]
        if not isinstance(rowid, int):
            return None, 0
        digest = hashlib.blake2b(digest_size=16)
        read = 0
        try:
            with self.db.open_value("workflows", "spec", rowid) as value:
                if value is None:
                    return None, 0
                while piece := value.read(read, MARK_PIECE):
                    digest.update(piece)
                    read += len(piece)
        except StoreBusyError:
            raise
        except StoreError:  # (the row changed while it was read)
            return None, read
        return digest.hexdigest(), read

    def read_mark(self, found: Row, spec: object) -> str | None:
        """`workflow_mark` of the spec text `spec` a caller read of a row whose
        `workflow_quiet` row, asked before that read, is `found`. PostgreSQL: its `seen`
        (its `xmin` then: a later write gives another); SQLite: the digest of that very
        text, so that what a pass keeps is what that text holds, whatever another client
        wrote meanwhile. None for a value that is not text (or not UTF-8)."""
        if self.db.dialect == "postgresql":
            return None if found["seen"] is None else str(found["seen"])
        if type(spec) is not str:  # (InvalidText: not the bytes stored)
            return None
        digest = hashlib.blake2b(digest_size=16)
        for start in range(0, len(spec), MARK_PIECE):  # (UTF-8 piece by piece: bounded)
            digest.update(spec[start : start + MARK_PIECE].encode())
        return digest.hexdigest()

    def put_workflows(self, rows: Iterable[dict[str, str]]) -> None:
        """Insert or replace workflows (name, version, description, spec), all or none."""
        rows = list(rows)  # (read once: each try writes them all)

        def put() -> None:  # only SQL: run again if rolled back (store/rerun.py)
            for row in rows:
                self.db.run(self.q.put_workflow, row)

        self.db.atomic(put)

    def close(self) -> None:
        self.db.close()


def _keyset(
    dialect: str, key: tuple[bytes, bytes] | None
) -> tuple[bytes | str | None, bytes | str | None]:
    """A key as UTF-8 bytes, as the dialect's queries take it (PostgreSQL: text)."""
    if key is None:
        return None, None
    if dialect == "postgresql":
        return _pg_text(key[0]), _pg_text(key[1])
    return key


def _pg_text(value: bytes) -> str:
    text = value.decode()  # (UnicodeDecodeError is a ValueError)
    if "\0" in text:
        raise ValueError("NUL in a key")
    return text


def open_definitions(target: str | Path, *, busy_timeout: float = 10.0) -> DefinitionStore:
    """Open (creating and migrating) the registry database: a path or a postgresql:// URL."""
    from swarm_engine.store import open_database

    return DefinitionStore(open_database(target, "registry", busy_timeout=busy_timeout))
