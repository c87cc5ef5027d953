"""Lists of the registry's definitions, bounded: keyset pages of `limit` definitions by
(name, version), their specs and descriptions within `LIST_BYTES` (measured in SQL before
any is read), with an opaque cursor to the next page.

A page holds definitions whose name and version are text of at most 1 KiB (the ones a
reference can name), by name and version, then the rows whose name or version is not
(hand-written: shown with their sizes and the defect line, never read whole), paged by
their position. A page ends early, its cursor saying where to go on, once the next
definition's spec and description would take it past `LIST_BYTES`; its first definition
is whole whatever its size (up to the 8 MiB a spec and 1 MiB a description may hold), so
that every page moves on and every listed definition is whole. A summary (`specs` false:
what `agent list` and `workflow list` print) reads no spec (a workflow's steps counted in
SQL) and descriptions' first 200 characters only."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from swarm_engine.errors import UsageError
from swarm_engine.store.rows import decode_record

if TYPE_CHECKING:
    from swarm_engine.store.db import Row
    from swarm_engine.store.definitions import DefinitionStore, Table

LIST_BYTES = 8 * 1024 * 1024
"""Bytes of specs and descriptions one page of a list carries at most (beyond its first
definition's, which is always whole): as a page of tickets (`service.tickets.PAGE_BYTES`)."""
PAGE_DEFINITIONS = 100
"""Definitions a page holds by default (`GET /v1/agents`, `GET /v1/workflows`)."""
MAX_PAGE_DEFINITIONS = 1000
"""The most a page may hold (`limit`)."""
MAX_CURSOR_CHARS = 12000
"""The longest cursor this gives (two keys of at most 1 KiB of UTF-8, as JSON: control
characters escaped, then base64)."""

PAGE_COLUMNS = ("key_name", "key_version", "total", "nth")
"""A page row's columns that say where it is, not what it holds."""


@dataclass(frozen=True)
class DefinitionPage:
    """One page: `items` (records as `decode_record` gives them), `next_cursor` (None on
    the last page)."""

    items: list[dict[str, Any]]
    next_cursor: str | None


def _encode(value: list[Any]) -> str:
    text = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(text).rstrip(b"=").decode("ascii")


def key_cursor(name: bytes, version: bytes) -> str:
    return _encode(["k", name.hex(), version.hex()])


def decode_cursor(cursor: str) -> tuple[bytes, bytes] | int:
    """A cursor's key (`(name, version)` as UTF-8 bytes) or position among the rows that
    have none; `UsageError` for text this never gave."""
    bad = UsageError("cursor is not one this list gave (pass the last page's as it is)")
    if not 1 <= len(cursor) <= MAX_CURSOR_CHARS or not cursor.isascii():
        raise bad
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if value[0] == "k" and len(value) == 3:
            return bytes.fromhex(value[1]), bytes.fromhex(value[2])
        if value[0] == "u" and len(value) == 2 and type(value[1]) is int and value[1] >= 0:
            return int(value[1])
    except (ValueError, TypeError, KeyError, IndexError, binascii.Error, RecursionError):
        raise bad from None  # (RecursionError: 9,000 levels of `[` fit in a cursor)
    raise bad


def _record(row: Row) -> dict[str, Any]:
    keys = [k for k in row.keys() if k not in PAGE_COLUMNS]  # noqa: SIM118 (Row: `in` is values)
    return decode_record({k: row[k] for k in keys})


def page(
    defs: DefinitionStore,
    table: Table,
    cursor: str | None,
    limit: int,
    *,
    specs: bool,
    shown: Callable[[dict[str, Any]], dict[str, Any] | None] = lambda r: r,
) -> DefinitionPage:
    """A page of `table` from `cursor` (None: the first), at most `limit` definitions
    (1 to `MAX_PAGE_DEFINITIONS`), each as `shown(record)` gives it (None: left out, as a
    row of a built-in agent's name in another version is). `UsageError` for a bad limit
    or cursor."""
    if not 1 <= limit <= MAX_PAGE_DEFINITIONS:
        raise UsageError(f"limit must be 1 to {MAX_PAGE_DEFINITIONS} (is {limit})")
    at = decode_cursor(cursor) if cursor is not None else None
    items: list[dict[str, Any]] = []

    def add(record: dict[str, Any]) -> None:
        if specs:
            record.pop("steps", None)  # (counted in SQL for a summary only)
        got = shown(record)
        if got is not None:
            items.append(got)

    offset = 0
    if not isinstance(at, int):
        try:
            rows = defs.page(table, at, limit + 1, specs=specs, budget=LIST_BYTES)
        except ValueError:
            raise UsageError("cursor is not one this list gave (its key)") from None
        for i, row in enumerate(rows):
            total = row["total"]
            over = specs and i > 0 and isinstance(total, int) and total > LIST_BYTES
            if i == limit or over:  # more, or this one does not fit: the next page has it
                before = rows[i - 1]
                key = bytes(before["key_name"]), bytes(before["key_version"])
                return DefinitionPage(items, key_cursor(*key))
            add(_record(row))
        room = limit - len(rows)
    else:
        offset, room = at, limit
    # the rows a key cannot name, after every keyed one
    if room == 0:
        more = bool(defs.unread(table, offset, 1))
        return DefinitionPage(items, _encode(["u", offset]) if more else None)
    tail = defs.unread(table, offset, room + 1)
    for row in tail[:room]:
        add(decode_record(row))
    more = len(tail) > room
    return DefinitionPage(items, _encode(["u", offset + room]) if more else None)
