"""The engine's own JSON writes, bounded before they are made: a value measured against
its cap (`json_size`, exact and without writing it) and written once (`bounded_json`,
`JsonText`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JsonText:
    """A value already written as the store writes JSON (`json.dumps(value, default=str)`:
    ASCII only, so `len(text)` is its size in UTF-8 bytes as stored). The store writes
    `text` as it is (`json_text`): a value measured against its cap is serialized once."""

    text: str
    depth: int = 0
    """How many levels of arrays and objects it nests (0: a scalar), when `bounded_json`
    measured it (`engine.bounds.combined_json` nests parts one level deeper)."""


def json_text(value: Any) -> str:
    """`value` as the store writes it: a `JsonText`'s text, else `json.dumps(value,
    default=str)`."""
    return value.text if isinstance(value, JsonText) else json.dumps(value, default=str)


class JsonTooDeep(ValueError):
    """A value nesting arrays and objects more than `limit` levels deep."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"nested deeper than {limit} levels")
        self.limit = limit


class JsonTooBig(ValueError):
    """A value whose JSON (`size` bytes) is more than its cap (`limit` bytes)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size:,} bytes of JSON, more than {limit:,}")
        self.size = size
        self.limit = limit


_CHUNK = 1024 * 1024
"""Characters of a long string measured at once (`json_size`): its escaped copy is at most
12 times this, whatever the string's length."""


def json_size(value: Any) -> int:
    """The exact length (bytes = characters: ASCII) of `json.dumps(value, default=str)`,
    without writing it: a value shared many times (a template's `${inputs.x}` in ten
    inputs) is measured once (by identity) and counted each time, so the cost is that of
    the distinct objects in memory, never of the text they would make (a 6 MiB input
    referenced ten times is measured once, 63 MB counted, nothing written). A long string
    is escaped a megabyte at a time. Raises ValueError (a cycle, an integer too long to
    write) and TypeError (a key JSON cannot hold) as `json.dumps` would."""
    return json_measure(value)[0]


def json_measure(value: Any, max_depth: int | None = None) -> tuple[int, int]:
    """`(json_size(value), depth)`: depth is how many levels of arrays and objects the
    value nests (0 for a scalar, 1 for `[1]`). With `max_depth`, `JsonTooDeep` as soon
    as the value is found to nest deeper (a shared value is measured once and its depth
    checked wherever it is named). Raises as `json_size`."""
    known: dict[int, tuple[int, int]] = {}
    busy: set[int] = set()

    def measure(item: Any, level: int) -> tuple[int, int]:
        if isinstance(item, str):
            found = known.get(id(item))
            if found is None:
                found = known[id(item)] = (_str_size(item), 0)
            return found
        if isinstance(item, dict | list | tuple):
            key = id(item)
            found = known.get(key)
            if found is None:
                if max_depth is not None and level >= max_depth:
                    raise JsonTooDeep(max_depth)  # (before going any deeper)
                if key in busy:
                    raise ValueError("Circular reference detected")
                busy.add(key)
                if isinstance(item, dict):
                    parts = [(_key_size(k) + 2, measure(v, level + 1)) for k, v in item.items()]
                else:
                    parts = [(0, measure(v, level + 1)) for v in item]
                total = 2 + sum(extra + size for extra, (size, _) in parts)
                total += 2 * max(len(item) - 1, 0)  # the ", " between items
                busy.discard(key)
                found = known[key] = (total, 1 + max((d for _, (_, d) in parts), default=0))
            elif max_depth is not None and level + found[1] > max_depth:
                raise JsonTooDeep(max_depth)
            return found
        return len(json.dumps(item, default=str)), 0

    try:
        return measure(value, 0)
    except RecursionError:
        raise ValueError("nested too deep to write as JSON") from None


def _str_size(text: str) -> int:
    if len(text) <= _CHUNK:
        return len(json.dumps(text))
    return 2 + sum(
        len(json.dumps(text[at : at + _CHUNK])) - 2 for at in range(0, len(text), _CHUNK)
    )


def _key_size(key: Any) -> int:
    if isinstance(key, str):
        return _str_size(key)
    return len(json.dumps({key: 0})) - 5  # (`{"1": 0}`: a key JSON writes as text)


def bounded_json(value: Any, limit: int, max_depth: int | None = None) -> JsonText:
    """`value` written as the store writes it, when that is at most `limit` bytes and,
    with `max_depth`, nests at most that many levels; else `JsonTooBig` (with the size) or
    `JsonTooDeep`, before anything is written (`json_measure`). Raises ValueError and
    TypeError as `json.dumps` would."""
    size, depth = json_measure(value, max_depth)
    if size > limit:
        raise JsonTooBig(size, limit)
    text = json.dumps(value, default=str)
    if len(text) > limit:  # (never: `json_size` is exact; a writer's guard all the same)
        raise JsonTooBig(len(text), limit)
    return JsonText(text, depth)


def mib(limit: int) -> str:
    """A cap for a line: `8 MiB`."""
    return f"{limit / 1024 / 1024:g} MiB"
