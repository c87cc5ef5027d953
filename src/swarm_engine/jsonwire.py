"""JSON bodies as systems exchange them: UTF-8 without a byte-order mark (RFC 8259
section 8.1). `json.loads` given bytes is lenient: it skips a UTF-8 BOM and reads UTF-16
and UTF-32 too, so a body other readers refuse (or read otherwise) would pass. The model
API gateway and the HTTP API read their bodies through `wire_text` instead."""

from __future__ import annotations

import codecs
import contextlib
import json
import re
from typing import Any

_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32 (it starts with a byte-order mark)"),  # (before UTF-16's)
    (codecs.BOM_UTF32_BE, "UTF-32 (it starts with a byte-order mark)"),
    (codecs.BOM_UTF8, "UTF-8 with a byte-order mark"),
    (codecs.BOM_UTF16_LE, "UTF-16 (it starts with a byte-order mark)"),
    (codecs.BOM_UTF16_BE, "UTF-16 (it starts with a byte-order mark)"),
)
"""Each mark and what the refusal calls a body that starts with it (a UTF-32 LE mark
starts with UTF-16 LE's bytes, so it is tried first)."""


class NotUtf8Json(ValueError):
    """A JSON body that is not UTF-8 without a BOM; its text is one line saying how."""


def wire_text(body: bytes) -> str:
    """`body` decoded as UTF-8, strictly; `NotUtf8Json` for one that starts with a
    byte-order mark (of any encoding) or holds bytes that are not UTF-8 (UTF-16 without a
    mark, where its text is ASCII, decodes and is then not JSON at all)."""
    for mark, what in _BOMS:
        if body.startswith(mark):
            raise NotUtf8Json(
                f"it is {what}; JSON must be UTF-8 without one (RFC 8259 section 8.1)"
            )
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotUtf8Json(
            f"it is not UTF-8 (byte {exc.start}: {exc.reason}); JSON must be UTF-8"
            " (RFC 8259 section 8.1)"
        ) from None


_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]:,]', re.DOTALL)
"""A JSON string, or a structural character: what `top_level` needs to see of a body."""


def top_level(body: bytes, keys: frozenset[str]) -> dict[str, Any]:
    """The values of `keys` among the members of the JSON object `body`, each read alone,
    without reading the rest: the usage of a model API answer whose content is nested past
    what `json.loads` reads (RecursionError at about 1,000 levels), which Anthropic bills
    all the same. One pass, no recursion. A value that does not read (nested too deep
    itself, not JSON) is left out; text that is not an object gives `{}`. Not a validator:
    only for a body `json.loads` gave up on."""
    found: dict[str, Any] = {}
    depth = 0
    key: str | None = None
    start = -1
    for token in _TOKEN.finditer(body):
        mark = token.group()[:1]
        if mark == b'"':
            if depth == 1 and start < 0 and key is None:
                with contextlib.suppress(ValueError):
                    key = json.loads(token.group())
            continue
        if depth == 0:  # (the first structural character opens the object, or nothing)
            if mark != b"{":
                return {}
            depth = 1
            continue
        if mark in b"{[":
            depth += 1
        elif mark == b":" and depth == 1:
            start = token.end()
        elif (mark == b"," and depth == 1) or (mark in b"}]" and depth == 1):
            if key in keys and start >= 0:
                with contextlib.suppress(ValueError, RecursionError):
                    found[key] = json.loads(body[start : token.start()])
            key, start = None, -1
            if mark != b",":
                break
        elif mark in b"}]":
            depth -= 1
    return found
