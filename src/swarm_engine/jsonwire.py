"""JSON bodies as systems exchange them: UTF-8 without a byte-order mark (RFC 8259
section 8.1). `json.loads` given bytes is lenient: it skips a UTF-8 BOM and reads UTF-16
and UTF-32 too, so a body other readers refuse (or read otherwise) would pass. The model
API gateway and the HTTP API read their bodies through `wire_text` instead."""

from __future__ import annotations

import codecs

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
