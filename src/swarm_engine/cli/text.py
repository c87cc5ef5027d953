"""Plain text for the CLI, without Rich: what the foreground engine prints per ticket
(importing Rich costs every `swarm-engine start` ~30 ms; `cli/output.py` re-exports these)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
from typing import Any

PIPED_WIDTH = 140
"""Columns assumed when output goes to a pipe or file (and `COLUMNS` is not set)."""


def terminal_width() -> int:
    """Columns for one line of output: `COLUMNS` if set, the terminal's width, or
    `PIPED_WIDTH` when stdout is not a terminal (as `cli/output.py`'s Rich consoles)."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    if not sys.stdout.isatty():
        return PIPED_WIDTH
    return shutil.get_terminal_size((80, 24)).columns


INVISIBLE = "\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"
"""The characters that reorder or hide text without being control characters: bidi marks,
embeddings, overrides and isolates (U+061C, U+200E/F, U+202A-U+202E, U+2066-U+2069),
zero-width spaces and joiners, line and paragraph separators, the byte-order mark."""

CONTROL = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f{INVISIBLE}]")
"""Control characters (C0, DEL, C1), and the invisible ones that reorder or hide text:
stored text shown with them could drive the terminal or pass for something else."""

CONTROL_BUT_LINES = re.compile(f"[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f{INVISIBLE}]")
"""`CONTROL` but newline and tab: what `visible_lines` shows as escapes."""


def _escaped(match: re.Match[str]) -> str:
    """`\\xNN` for a character up to U+00FF, `\\uNNNN` above (as Python writes them):
    `\\u061c` cannot be read as `\\x61` and a `c`."""
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str) -> str:
    """Control characters (escape sequences, newlines, bells) and bidi controls shown as
    `\\xNN` or `\\uNNNN` (`\\x1b`, `\\u202e`), so stored text can neither drive the terminal, nor forge lines of
    output, nor reorder what is shown. Every line the CLI prints with text from a row, an
    agent, a step or an exception goes through this or `visible_lines`."""
    return CONTROL.sub(_escaped, text)


NAME_CHARS = 200
"""The most of a name, id or title a one-line view shows (`brief`): a header, a rule, a
table cell. A row's value may be of any size; Rich lays a long line out in time that
grows with its length (a 200,000-character step id in a rule took minutes)."""


def brief(value: Any, limit: int = NAME_CHARS) -> str:
    """A stored name, id or title for one line of a view: `visible`, whole when at most
    `limit` characters, else its first `limit`, `…` and how long it is (`aaa… (3,000,000
    characters)`), as `records.shown` names a value in an error. Only the first `limit`
    characters are read, so a value of any size costs the same."""
    text = "" if value is None else str(value)
    if len(text) <= limit:
        return visible(text)
    return f"{visible(text[:limit])}… ({len(text):,} characters)"


def visible_lines(text: str) -> str:
    """Multi-line stored text (a log, a whole result) as `visible` shows one line: each
    control character and bidi control as `\\xNN` (escape sequences, carriage returns,
    bells, U+202E), newlines and tabs kept. For text written straight to stdout, whether a terminal or not: a log saved
    with `>` and shown later with `cat` must not drive the terminal either."""
    return CONTROL_BUT_LINES.sub(_escaped, text)


def summarize(value: Any) -> Any:
    """The interesting part of a result: shell outputs without empty or default fields."""
    if not isinstance(value, dict):
        return value
    trimmed = {
        k: v
        for k, v in value.items()
        if not (k in ("stdout", "stderr") and not v) and not (k == "exit_code" and v == 0)
    }
    if list(trimmed) == ["stdout"]:
        return str(trimmed["stdout"]).strip()
    return trimmed


CUT_TEXT = re.compile(r"\[\.\.\. \d+ bytes cut \.\.\.\]")


def short(value: Any, width: int = 60) -> str:
    """`value` summarized on one line of at most `width` characters. Output whose middle
    was cut (a `[... N bytes cut ...]` marker) keeps its start, the marker and its end."""
    value = summarize(value)
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = visible(" ".join(text.split()))
    if len(text) <= width:
        return text
    cut = CUT_TEXT.search(text)
    if cut is not None and width >= len(cut.group()) + 12:
        room = width - len(cut.group()) - 2
        return f"{text[: room // 2]}…{cut.group()}…{text[len(text) - (room - room // 2) :]}"
    return text[: width - 1] + "…"


def ms(value: Any) -> str:
    """A duration in milliseconds, for people: `85 ms`, `2.4 s`, `3m 05s`, `1h 02m`
    (a stored value that is not a number is shown as it is)."""
    if value is None:
        return ""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return visible(str(value))[:40]
    if not math.isfinite(value) or abs(value) > 1e15:  # (stored by any writer)
        return str(value)
    return duration(value / 1000)


def duration(seconds: float) -> str:
    """A duration for people: `85 ms`, `2.4 s`, `3m 05s`, `1h 02m`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"


def left_running(ticket_ids: list[int], meant: str, lease_ttl: float) -> str:
    """One line: these tickets' abort (`meant`: what it would have made them) could not
    be recorded, and what becomes of them."""
    ids = ", ".join(map(str, ticket_ids))
    return (
        f"ticket(s) {ids} could not be {meant}: the store stayed busy until their leases"
        " were given up, and still says this engine holds them; they will be re-queued"
        f" when their leases expire (within {lease_ttl:g}s) by any running engine or"
        " 'swarm-engine cleanup'"
    )
