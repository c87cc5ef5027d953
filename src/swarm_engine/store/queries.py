"""Named SQL, one file per store table group and dialect: `store/sql/<dialect>/queries/<group>.sql`.

A file is a list of statements, each headed by `-- name: <name>`:

    -- name: get
    SELECT * FROM tickets WHERE id = :id

Parameters are named (`:id`) in both dialects; for PostgreSQL they are rewritten to
psycopg's `%(id)s` when the file loads (and a literal `%` doubled). A parameter that is
a list is passed as an array to PostgreSQL (`= ANY(:ids)`) and as JSON text to SQLite
(`IN (SELECT value FROM json_each(:ids))`). Every dialect must define the same names
(checked by tests/integration/test_store_dialects.py).

A statement may hold another (a list of columns, say) as `{{name}}`: it is put in when the
file loads (the other statement is defined in the same file, and holds none itself).
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from swarm_engine.store.db import Dialect

HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$")
PART = re.compile(r"\{\{([a-z_][a-z0-9_]*)\}\}")
PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
GROUPS = ("tickets", "runs", "vms", "engines", "logs", "triggers", "definitions", "probe")
SQL_DIR = Path(__file__).with_name("sql")
"""`store/sql/`, read as files next to this module (not through importlib.resources, whose
import costs a short command 5-10 ms; the package is always installed as files)."""


class Queries:
    """The named statements of one group, as attributes: `queries.get`."""

    def __init__(self, group: str, statements: dict[str, str]) -> None:
        self._group = group
        self._statements = statements

    def __getattr__(self, name: str) -> str:
        try:
            return self._statements[name]
        except KeyError:
            raise AttributeError(f"no query {name!r} in {self._group}.sql") from None

    def names(self) -> set[str]:
        return set(self._statements)


def parse(text: str, *, dialect: Dialect, source: str) -> dict[str, str]:
    """The statements of one file by name. Raises ValueError on a malformed file."""
    statements: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []

    def close() -> None:
        if name is None:
            return
        body = "\n".join(lines).strip().rstrip(";").strip()
        if not body:
            raise ValueError(f"{source}: query {name!r} is empty")
        statements[name] = _native(body) if dialect == "postgresql" else body

    for line in text.splitlines():
        match = HEADER.match(line.strip())
        if match:
            close()
            name, lines = match.group(1), []
            if name in statements:
                raise ValueError(f"{source}: query {name!r} is defined twice")
        elif name is not None and not line.lstrip().startswith("--"):
            lines.append(line)
    close()

    def part(match: re.Match[str]) -> str:
        found = statements.get(match.group(1))
        if found is None or PART.search(found):
            raise ValueError(f"{source}: {match.group(0)} names no statement without parts")
        return found

    return {name: PART.sub(part, body) for name, body in statements.items()}


def _native(sql: str) -> str:
    """`:name` -> `%(name)s` and `%` -> `%%`, outside quoted literals (psycopg's style)."""
    parts = re.split(r"('(?:[^']|'')*')", sql)
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # a quoted literal
            out.append(part.replace("%", "%%"))
        else:
            out.append(PARAM.sub(r"%(\1)s", part.replace("%", "%%")))
    return "".join(out)


@functools.cache
def load(dialect: Dialect, group: str) -> Queries:
    """The named statements of `group` for `dialect` (read once per process)."""
    entry = SQL_DIR / dialect / "queries" / f"{group}.sql"
    return Queries(
        group,
        parse(entry.read_text(encoding="utf-8"), dialect=dialect, source=f"{dialect}/{group}.sql"),
    )


def split_script(script: str) -> Iterator[str]:
    """Split a SQLite migration into statements (sqlite3.complete_statement handles triggers)."""
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
