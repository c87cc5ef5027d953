"""Checks of values a client hands in (text, JSON, ids), the same for every caller.

Both stores must be able to hold what is accepted: PostgreSQL refuses a NUL character in
text and in JSON strings, and neither store can encode a lone UTF-16 surrogate (what
Python makes of bytes that are not UTF-8 in a command-line argument). JSON must be what
the stores' JSON checks accept: no NaN or infinity, and nested at most `MAX_JSON_DEPTH`
levels (deeper would also break the encoder's recursion limit).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from swarm_engine.errors import UsageError
from swarm_engine.records import fits_double, out_of_range, shown

MAX_JSON_DEPTH = 64
MAX_ID = 2**63 - 1
MIN_INT = -(2**63)


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text (None when it can)."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate)"
    return None


def check_text(value: str, field: str) -> str:
    """`value`, or `UsageError` ("<field> contains a NUL character")."""
    problem = text_problem(value)
    if problem:
        raise UsageError(f"{field} {problem}")
    return value


def check_json(value: Any, field: str) -> Any:
    """`value` (a JSON-like structure), or `UsageError` naming where it cannot be stored:
    a number that is not finite or an integer past a double's range, text `check_text`
    refuses, a key that is not text, nesting deeper than `MAX_JSON_DEPTH`, a value that
    is not JSON at all."""
    _walk(value, field, 0)
    return value


def _walk(value: Any, where: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise UsageError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not fits_double(value):  # (what every store's reader refuses: `strict_json`)
            raise UsageError(f"{where}: {out_of_range(value)}")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UsageError(f"{where}: {value!r} is not a finite number")
        return
    if isinstance(value, str):
        check_text(value, where)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UsageError(f"{where}: key {shown(key)} is not text")
            check_text(key, f"{where}: key {key[:40]!r}")
            _walk(item, f"{where}.{key}", depth + 1)
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _walk(item, f"{where}[{i}]", depth + 1)
        return
    raise UsageError(f"{where}: {type(value).__name__} is not a JSON value")


def check_ids(ids: Iterable[int], field: str = "ids", *, most: int = 1000) -> list[int]:
    """Distinct ticket ids in the order given, each a 64-bit integer (what a row's id can
    hold: any client may write 0 or a negative one), at most `most` of them; else
    `UsageError`."""
    out: list[int] = []
    seen: set[int] = set()
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, int) or not MIN_INT <= value <= MAX_ID:
            raise UsageError(f"{field}: {shown(value)} is not a ticket id ({MIN_INT} to {MAX_ID})")
        if value not in seen:
            seen.add(value)
            out.append(value)
    if len(out) > most:
        raise UsageError(f"{field}: at most {most} at once (got {len(out)})")
    return out
