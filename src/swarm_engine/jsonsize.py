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


def json_text(value: Any) -> str:
    """`value` as the store writes it: a `JsonText`'s text, else `json.dumps(value,
    default=str)`."""
    return value.text if isinstance(value, JsonText) else json.dumps(value, default=str)


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
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size_of(item: Any) -> int:
        if isinstance(item, str):
            known = sizes.get(id(item))
            if known is None:
                known = sizes[id(item)] = _str_size(item)
            return known
        if isinstance(item, dict | list | tuple):
            key = id(item)
            known = sizes.get(key)
            if known is not None:
                return known
            if key in busy:
                raise ValueError("Circular reference detected")
            busy.add(key)
            if isinstance(item, dict):
                total = 2 + sum(_key_size(k) + 2 + size_of(v) for k, v in item.items())
            else:
                total = 2 + sum(size_of(v) for v in item)
            total += 2 * max(len(item) - 1, 0)  # the ", " between items
            busy.discard(key)
            sizes[key] = total
            return total
        return len(json.dumps(item, default=str))

    try:
        return size_of(value)
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


def bounded_json(value: Any, limit: int) -> JsonText:
    """`value` written as the store writes it, when that is at most `limit` bytes; else
    `JsonTooBig` (with the size), before anything is written (`json_size`). Raises
    ValueError and TypeError as `json.dumps` would."""
    size = json_size(value)
    if size > limit:
        raise JsonTooBig(size, limit)
    text = json.dumps(value, default=str)
    if len(text) > limit:  # (never: `json_size` is exact; a writer's guard all the same)
        raise JsonTooBig(len(text), limit)
    return JsonText(text)


def mib(limit: int) -> str:
    """A cap for a line: `8 MiB`."""
    return f"{limit / 1024 / 1024:g} MiB"
