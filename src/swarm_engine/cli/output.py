"""Rendering for the CLI: Rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from swarm_engine.store.rows import format_ts, parse_timestamp

console = Console()
err_console = Console(stderr=True)
for _c in (console, err_console):
    if not _c.is_terminal and "COLUMNS" not in os.environ:
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
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


class Markup(str):
    """Rich markup we wrote ourselves; every other string is shown as plain text."""

    __slots__ = ()


def styled(status: str | None) -> Markup:
    """A status in its colour (the text escaped: a status may come from any writer)."""
    if not status:
        return Markup("")
    style = STATUS_STYLE.get(status)
    return Markup(f"[{style}]{escape(status)}[/{style}]" if style else escape(status))


def plain(value: Any) -> str:
    """Any value as text that Rich prints literally (no markup in stored data)."""
    return value if isinstance(value, Markup) else escape("" if value is None else str(value))


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
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = CUT_TEXT.search(text)
    if cut is not None and width >= len(cut.group()) + 12:
        room = width - len(cut.group()) - 2
        return f"{text[: room // 2]}…{cut.group()}…{text[len(text) - (room - room // 2) :]}"
    return text[: width - 1] + "…"


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*(plain(v) for v in row))
    return t


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


def ms(value: int | None) -> str:
    if value is None:
        return ""
    return f"{value} ms" if value < 10_000 else f"{value / 1000:.1f} s"


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
        f", ${row.get('cost_usd') or 0:.4f}"
    )
