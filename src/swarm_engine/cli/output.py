"""Rendering for the CLI: Rich tables for people, JSON for scripts."""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.markup import escape
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from swarm_engine.cli.text import CONTROL as CONTROL  # re-exported
from swarm_engine.cli.text import NAME_CHARS as NAME_CHARS  # re-exported
from swarm_engine.cli.text import brief as brief  # re-exported
from swarm_engine.cli.text import duration as duration  # re-exported
from swarm_engine.cli.text import ms as ms  # re-exported
from swarm_engine.cli.text import short as short  # re-exported
from swarm_engine.cli.text import summarize as summarize  # re-exported
from swarm_engine.cli.text import visible as visible  # re-exported
from swarm_engine.cli.text import visible_lines as visible_lines  # re-exported
from swarm_engine.records import money as money  # re-exported
from swarm_engine.records import strict_dumps
from swarm_engine.store.timestamps import format_ts, parse_timestamp


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """A closed pipe is an `OSError` like any output that cannot be written (Rich's
        own ends the process, `SystemExit(1)`, from inside whatever printed: a ticket's
        run under `run-ticket --wait`, cut short): `cli/unwritable.py` handles it."""
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


console = _Console(highlight=False, emoji=False)
err_console = _Console(stderr=True, highlight=False, emoji=False)
"""Without Rich's highlighting: its patterns take time that grows with the square of an
unbroken token's length (an 80,000-character description took 77 s); nothing the CLI
prints is highlighted, what is styled is our own `Markup`. Without its emoji codes: a
stored `:warning:` is text, not a sign (stored text goes through `literal`)."""
for _c in (console, err_console):
    if not _c.is_terminal and not os.environ.get("COLUMNS", "").strip().isdigit():
        _c.width = 140  # piped or logged: don't squeeze tables into 80 columns

STATUS_STYLE = {
    "done": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "claimed": "cyan",
    "open": "blue",
    "draft": "dim",
    "queued": "dim",
    "skipped": "dim",
}


def emit_json(data: Any) -> None:
    """Every `--json` output: strict JSON (a number that is not finite is `null`)."""
    sys.stdout.write(strict_dumps(data, indent=2, default=str) + "\n")


def emit_yaml(data: Any) -> None:
    """A definition as YAML (`agent show`, `workflow show`), written as plain text, not
    through Rich: no markup, wrapping or highlighting, so its time grows with its size
    alone (a 1 MiB token in one line is printed as it is), with libyaml's emitter where
    PyYAML has it (the same YAML, long lines folded at other spaces). YAML escapes every control
    and non-ASCII character (`"\\e[31m"`, `"\\u202E"`); `visible_lines` escapes any
    left, so stored text never drives the terminal."""
    import yaml  # (not at start-up: `status` and `ticket create` never load it)

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: ~100 times faster
    text = yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=False).rstrip()
    sys.stdout.write(visible_lines(text) + "\n")


class Markup(str):
    """Rich markup we wrote ourselves; every other string is shown as plain text."""

    __slots__ = ()


def styled(status: str | None) -> Markup:
    """A status in its colour (the text escaped: a status may come from any writer)."""
    if not status:
        return Markup("")
    style = STATUS_STYLE.get(status)
    text = literal(brief(status))
    return Markup(f"[{style}]{text}[/{style}]" if style else text)


BLOCK_MAX_CHARS = 256 * 1024
"""The most of one field a table shows (Rich folds a long line in time that grows with
the square of its length: 2 MB took a second, 60 MB minutes); `--json` has it all."""


def block(value: Any) -> str:
    """Like `plain`, for a multi-line field: newlines and tabs are kept, and a field past
    `BLOCK_MAX_CHARS` is cut there with a line that says how much more there is."""
    text = "" if value is None else str(value)
    more = len(text) - BLOCK_MAX_CHARS
    if more > 0:
        text = text[:BLOCK_MAX_CHARS]
        tail = f"\n[... {more} more characters: --json shows all of it ...]"
        return literal(visible_lines(text)) + escape(tail)
    return literal(visible_lines(text))


def print_fields(rows: Sequence[tuple[str, str]]) -> None:
    """Print `(name, markup value)` rows as a block of fields, names in a column, values
    beside them; empty values are left out. On a terminal the values wrap at its width
    under their own column, no spaces after them; piped (no terminal, no `COLUMNS`) each value line is printed
    whole, its next lines indented under it, with no padding after it, its tabs kept: a
    long error or result is one line that `grep` finds."""
    shown = [(name, value) for name, value in rows if value]
    if not piped():
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        for name, value in shown:
            grid.add_row(name, Text.from_markup(value, emoji=False))
        console.print(Unpadded(grid), highlight=False)  # (no spaces after a value)
        return
    indent = max((len(name) for name, _ in shown), default=0) + 2
    for name, value in shown:
        for i, line in enumerate(
            Text.from_markup(value, emoji=False).split("\n", allow_blank=True)
        ):
            head = name.ljust(indent) if i == 0 else " " * indent
            # as it is: no style in a pipe, and a tab stays a tab (Rich expands it)
            console.file.write((head + line.plain).rstrip() + "\n")


def piped() -> bool:
    """Standard output is not a terminal and no width was given (`COLUMNS`, as Rich reads
    it: digits; empty or not a number, it is as if unset): a line is printed whole there,
    for `grep`, where a terminal would wrap it."""
    return not console.is_terminal and not os.environ.get("COLUMNS", "").strip().isdigit()


def plain(value: Any) -> str:
    """Any value as text that Rich prints literally: no markup and no control characters
    from stored data; cut at `BLOCK_MAX_CHARS` as `brief` cuts (a name, an id or a title
    is shown by `label`, shorter)."""
    if isinstance(value, Markup):
        return value
    return literal(brief(value, BLOCK_MAX_CHARS))


def label(value: Any) -> str:
    """A stored name, id or title as Rich prints it literally, on one line and at most
    `NAME_CHARS` of it, the cut said (`brief`): ticket titles, step ids, agents."""
    return literal(brief(value))


def literal(text: str) -> str:
    """Markup that Rich prints as `text` is, wherever the markup is put. Rich's `escape`
    is not enough: a backslash before a `[` that starts no tag was dropped (`\\[` printed
    `[`), and a text ending in one backslash is right only when a tag follows it (it
    doubles the backslash: alone, two were printed), one ending in two only when none does.
    Here each `[` that starts a tag is escaped (its backslashes doubled, as Rich reads
    them), each other `[` after a backslash gets one more, and a text that ends in
    backslashes is closed by a tag of the null style, its trailing backslashes doubled."""
    out = _BRACKETS.sub(_bracket, text) if "[" in text else text
    body = out.rstrip("\\")
    if len(body) == len(out):
        return out
    doubled = "\\" * (2 * (len(out) - len(body)))
    return f"[none]{body}{doubled}[/none]"


_BRACKETS = re.compile(r"(\\*)(\[(?:[a-z#/@][^[]*?\])?)")
"""A `[` with the backslashes before it; with the rest of its tag when it starts one (as
Rich's markup parser reads tags)."""


def _bracket(found: re.Match[str]) -> str:
    slashes, bracket = found.group(1), found.group(2)
    if len(bracket) > 1:  # a tag: Rich halves the backslashes before it, one escapes it
        return slashes * 2 + "\\" + bracket
    return slashes + ("\\" if slashes else "") + bracket  # Rich drops one before a `[`


@dataclass(frozen=True)
class Col:
    """A table column. A `flex` column is cut (with `…`) when the rows would not fit the
    terminal; the others always show their whole value. `min` is the least width a flex
    column is cut to (default: its header's). A column with `hide_below` is left out of
    tables narrower than that (detail that `--json` and a wider terminal still show)."""

    header: str
    flex: bool = False
    min: int = 0
    justify: Literal["left", "right"] = "left"
    hide_below: int = 0


GAP = 2  # spaces between columns


def cell(value: Any) -> Text:
    """A table cell: our own markup rendered, anything else literal, always one line, at
    most `NAME_CHARS` of it (then `… (N characters)`, as `brief` says a cut). Every
    control character shows as `ticket show` shows it (`visible`: a newline as `\\x0a`,
    a carriage return as `\\x0d`) and spaces as they are: a value is never rewritten to
    look like another (`a  b` is not `a b`, nor `a\\nb`)."""
    if isinstance(value, Markup):
        return Text.from_markup(value, emoji=False)
    text = "" if value is None else str(value)
    more = f"… ({len(text):,} characters)" if len(text) > NAME_CHARS else ""
    return Text(visible(text[:NAME_CHARS]) + more)


def fit(natural: Sequence[int], minimum: Sequence[int], room: int) -> list[int]:
    """Widths for flex columns wanting `natural` in `room` characters: each gets what it
    needs if all fit, else at least its `minimum`, the rest shared out evenly (a column
    never gets more than it needs)."""
    if sum(natural) <= room:
        return list(natural)
    widths = [min(n, m) for n, m in zip(natural, minimum, strict=True)]
    spare = room - sum(widths)
    while spare > 0:
        growing = [i for i, w in enumerate(widths) if w < natural[i]]
        if not growing:
            break
        for i in growing[:spare]:
            widths[i] += 1
        spare -= min(spare, len(growing))
    return widths


def table(
    title: str | None,
    columns: Sequence[str | Col],
    rows: Iterable[Sequence[Any]],
    *,
    width: int | None = None,
) -> Unpadded:
    """A table whose every row is one line of at most `width` (default: the terminal's)
    characters: flex columns are cut to fit, and no cell ever wraps. Cells are shown
    literally (stored text is data, not markup), except `Markup` that we wrote."""
    width = width or console.width
    cols = [c if isinstance(c, Col) else Col(c) for c in columns]
    keep = [i for i, c in enumerate(cols) if c.hide_below <= width]
    cols = [cols[i] for i in keep]
    body = [[cell(row[i]) for i in keep] for row in rows]
    natural = [max([len(c.header), *(r[i].cell_len for r in body)]) for i, c in enumerate(cols)]
    total = width - GAP * (len(cols) - 1)
    flex = [i for i, c in enumerate(cols) if c.flex]
    room = total - sum(n for i, n in enumerate(natural) if i not in flex)
    given = fit(
        [natural[i] for i in flex], [max(cols[i].min, len(cols[i].header)) for i in flex], room
    )
    widths = list(natural)
    for i, w in zip(flex, given, strict=True):
        widths[i] = w
    t = Table(
        title=title,
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, GAP - 1, 0, 0),
    )
    for c, w in zip(cols, widths, strict=True):
        t.add_column(c.header, width=w, no_wrap=True, overflow="ellipsis", justify=c.justify)
    for r in body:
        t.add_row(*r)
    return Unpadded(t)


def say(markup: str) -> None:
    """Print a line of markup (stored values in it escaped by the caller): on a terminal
    wrapped at its width with nothing after each line's last character (a wrap leaves
    the space it broke at), piped whole (`piped`)."""
    text = Text.from_markup(markup, emoji=False)
    text.rstrip()  # (a value that ends in spaces, or is empty: `ticket 7: `)
    if piped():
        console.print(text, soft_wrap=True, highlight=False)
    else:
        console.print(Unpadded(text), highlight=False)


class Unpadded:
    """A table (or any renderable) as Rich renders it, each line without the spaces that
    pad it to the table's width (its title, its last column) or that a wrap left: nothing
    after a line's last character, in a pipe or a terminal."""

    def __init__(self, inner: RenderableType) -> None:
        self.inner = inner

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in console.render_lines(self.inner, options, pad=False):
            yield from _rstripped(line)
            yield Segment.line()


def _rstripped(line: list[Segment]) -> list[Segment]:
    """`line` without its trailing spaces (each segment keeps its style)."""
    kept = list(line)
    while kept:
        last = kept[-1]
        if last.control is not None:  # (a control code: kept as it is, and what precedes)
            break
        text = last.text.rstrip(" ")
        if text:
            kept[-1] = Segment(text, last.style, last.control)
            break
        kept.pop()
    return kept


def ago(ts: str | datetime | None) -> str:
    """How long ago, for people ('3s ago'); any stored timestamp form; '' if unreadable."""
    if ts is None or ts == "":
        return ""
    try:
        then = ts if isinstance(ts, datetime) else parse_timestamp(ts)
    except (ValueError, OverflowError, OSError):
        return "?"
    if then is None:
        return ""
    secs = (datetime.now(UTC) - then).total_seconds()
    if secs < 0:
        return f"in {format_ts(then)}" if secs < -60 else "just now"
    if secs < 60:
        return f"{secs:.0f}s ago"
    if secs < 3600:
        return f"{secs / 60:.0f}m ago"
    if secs < 86400:
        return f"{secs / 3600:.1f}h ago"
    return f"{secs / 86400:.1f}d ago"


def when(ts: datetime | None) -> str:
    """A timestamp for people: `2026-12-01 02:26:40 UTC (3m ago)`."""
    if ts is None:
        return ""
    return f"{ts.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({ago(ts)})"


def whole(value: Any) -> str:
    """A value in full: text as it is, anything else as JSON (indented when it is long)."""
    if isinstance(value, str):
        return value
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= 100:
        return text
    return json.dumps(value, ensure_ascii=False, default=str, indent=2)


def usage_line(row: dict[str, Any]) -> str:
    tokens = sum(
        row.get(k) or 0
        for k in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        )
    )
    if not tokens and not row.get("cost_usd"):
        return ""
    return (
        f"in {row.get('input_tokens') or 0} / out {row.get('output_tokens') or 0} tokens"
        f" (cache w {row.get('cache_creation_input_tokens') or 0}, r {row.get('cache_read_input_tokens') or 0})"
        f", {money(row.get('cost_usd') or 0)}"
    )
