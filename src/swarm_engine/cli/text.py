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


FORMAT_CHARS: tuple[tuple[int, int], ...] = (
    (0x0000, 0x001F), (0x007F, 0x009F), (0x00AD, 0x00AD), (0x0600, 0x0605),
    (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891),
    (0x08E2, 0x08E2), (0x180E, 0x180E), (0x200B, 0x200F), (0x2028, 0x202E),
    (0x2060, 0x2064), (0x2066, 0x206F), (0xD800, 0xDFFF), (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x13438),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F),
)  # fmt: skip
"""Every code point whose Unicode category (`unicodedata.category`, Unicode 14 as in
Python 3.11) is Cc (control: C0, DEL, C1), Cf (format: bidi marks, embeddings, overrides
and isolates, zero-width spaces and joiners, the soft hyphen U+00AD, the byte-order mark,
tag characters U+E0001-U+E007F, ...), Cs (a lone surrogate), Zl or Zp (line and
paragraph separators), as ranges. Written out, not computed, because computing it takes
0.2 s at each start; tests/unit/test_cli_text.py checks it against `unicodedata`."""

IGNORABLE_CHARS: tuple[tuple[int, int], ...] = (
    (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F),
    (0x2065, 0x2065), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8), (0xE0000, 0xE0FFF),
)  # fmt: skip
"""Default-ignorable code points outside those categories (Unicode's
`Default_Ignorable_Code_Point`, which `unicodedata` does not give): shown as nothing, so
they can hide text or data just as well. The combining grapheme joiner, Hangul fillers,
Khmer inherent vowels, Mongolian and other variation selectors (U+FE00-U+FE0F,
U+E0100-U+E01EF), and the code points Unicode keeps ignorable for later."""


def _char_class(ranges: tuple[tuple[int, int], ...], keep: str = "") -> re.Pattern[str]:
    """A pattern matching one character of `ranges`, except those in `keep`."""
    kept = sorted(map(ord, keep))
    parts: list[str] = []
    for start, end in ranges:
        low = start
        for code in [*(k for k in kept if start <= k <= end), end + 1]:
            if low < code:
                parts.append(f"\\U{low:08x}-\\U{code - 1:08x}")
            low = code + 1
    return re.compile(f"[{''.join(parts)}]")


CONTROL = _char_class(FORMAT_CHARS + IGNORABLE_CHARS)
"""Control, format and other invisible characters (`FORMAT_CHARS`, `IGNORABLE_CHARS`):
stored text shown with them could drive the terminal, hide text or data, or pass for
something else."""

CONTROL_BUT_LINES = _char_class(FORMAT_CHARS + IGNORABLE_CHARS, keep="\t\n")
"""`CONTROL` but newline and tab: what `visible_lines` shows as escapes."""


def _escaped(match: re.Match[str]) -> str:
    """`\\xNN` for a character up to U+00FF, `\\uNNNN` up to U+FFFF, `\\UNNNNNNNN` above (as
    Python writes them): `\\u061c` cannot be read as `\\x61` and a `c`, nor `\\U000e0041`
    as `\\ue004` and a `1`."""
    code = ord(match.group())
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def visible(text: str) -> str:
    """Control characters (escape sequences, newlines, bells), format characters (bidi
    controls, zero-width ones, the soft hyphen, tags) and other invisible ones shown as
    `\\xNN`, `\\uNNNN` or `\\UNNNNNNNN` (`\\x1b`, `\\u202e`, `\\U000e0041`), so stored text can
    neither drive the terminal, nor forge lines of output, nor reorder or hide what is
    shown. Every line the CLI prints with text from a row, an
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
    control, format or invisible character escaped (escape sequences, carriage returns,
    bells, U+202E, U+00AD), newlines and tabs kept. For text written straight to stdout, whether a terminal or not: a log saved
    with `>` and shown later with `cat` must not drive the terminal either."""
    return CONTROL_BUT_LINES.sub(_escaped, text)


NO_ERROR_TEXT = "(no error text)"
"""What a view shows for a stored error that is empty or only whitespace."""


def error_line(value: Any) -> str:
    """A stored error on one line, as `ticket show` shows it: without its leading and
    trailing whitespace, every control character inside it escaped (a newline as
    `\\x0a`); `NO_ERROR_TEXT` for one that is only whitespace."""
    return visible(str(value).strip()) or NO_ERROR_TEXT


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
    """`value` summarized on one line of at most `width` characters: text without its
    leading and trailing whitespace, every control character inside it escaped as
    `visible` escapes it (a newline as `\\x0a`), spaces kept. Output whose middle was cut
    (a `[... N bytes cut ...]` marker) keeps its start, the marker and its end."""
    value = summarize(value)
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = visible(text.strip())
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


def stopped_after(claimed: int, aborted: int) -> str:
    """An engine's last line: `engine stopped after running 5 ticket(s)`, with `and
    aborting 2` when it cut `aborted` of the `claimed` tickets short (a `stop --now`, or
    left leased when the store was given up): those are not counted as run."""
    said = f"engine stopped after running {claimed - aborted} ticket(s)"
    return said + (f" and aborting {aborted}" if aborted else "")


def stop_unrecorded(
    ticket_ids: list[int], end_unrecorded: bool, lease_ttl: float, trouble: str | None
) -> str | None:
    """What an engine's stop left unrecorded because the store stayed busy or did not
    answer (`ticket_ids`: tickets still leased to it; `end_unrecorded`: its own end), as
    one clause; None when it recorded everything."""
    if not ticket_ids and not end_unrecorded:
        return None
    said = []
    if ticket_ids:
        ids = ", ".join(map(str, sorted(ticket_ids)))
        said.append(
            f"ticket(s) {ids} left leased to it, never run twice: they are re-queued when"
            f" their leases expire (within {lease_ttl:g}s) by any running engine or"
            " 'swarm-engine cleanup'"
        )
    if end_unrecorded:
        said.append(
            "its own stop not recorded ('swarm-engine status' shows it dead, 'swarm-engine"
            " cleanup' or the next start records it)"
        )
    why = f" ({short(trouble, 200)})" if trouble else ""
    return (
        f"without recording all of its stop: the store stayed busy or unreachable{why}"
        f" until it was given up; " + "; ".join(said)
    )


def reaped_when(seconds: int) -> str:
    """What becomes of an engine of this host whose process this host does not show but
    whose heartbeat is younger than a lease: killed, most likely, or an engine of another
    pid namespace (which heartbeats on: a pid alone is not trusted, `EngineStore.gone_from`)."""
    when = "now" if seconds <= 0 else f"in {seconds}s"
    return (
        f"unless it heartbeats again (an engine of another pid namespace), 'swarm-engine"
        f" cleanup' reaps it and its VMs once its heartbeat is a lease old ({when}); its"
        " tickets are re-queued as their leases expire"
    )
