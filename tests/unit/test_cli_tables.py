"""`table()` keeps every row on one line at any width: flex columns are cut with `…`, the
others shown whole; stored text is never read as markup. Rendered to fixed widths."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from rich.text import Text

from swarm_engine.cli.output import (
    NAME_CHARS,
    Col,
    cell,
    duration,
    fit,
    literal,
    ms,
    styled,
    table,
)

ROWS = [
    (1, styled("done"), "a short title", "workflow:text-report", {"words": 4}),
    (22, styled("cancelled"), "x " * 80, "an-agent-with-a-rather-long-name", "y" * 300),
    (333, styled("failed"), "[bold]not bold[/bold]", "echo", "line one\nline two"),
]
COLUMNS = [Col("id", justify="right"), "status", Col("title", flex=True, min=10),
           Col("agent / workflow", flex=True, min=20), Col("result", flex=True, min=10)]  # fmt: skip


def render(width: int, columns: list[str | Col] = COLUMNS) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(table(None, columns, ROWS, width=width))
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_each_row_is_one_line_within_the_width(width: int) -> None:
    lines = render(width)
    assert len(lines) == 2 + len(ROWS)
    assert all(len(line) <= width for line in lines)
    assert [line.split()[0] for line in lines[2:]] == ["1", "22", "333"]
    assert lines[0].split()[:2] == ["id", "status"]  # the header is one line too
    assert "cancelled" in lines[3] and "failed" in lines[4]  # fixed columns: whole


def test_flex_columns_are_cut_with_an_ellipsis_and_keep_their_minimum() -> None:
    lines = render(80)
    assert "…" in lines[3]
    assert "workflow:text-report" in lines[2]  # 20 characters: the column's minimum
    assert "[bold]not" in lines[4]  # markup in stored text is shown, not applied
    assert "line one\\x0aline two" in render(200)[4]  # a newline in a value: its escape


def test_a_detail_column_shows_only_on_a_wide_terminal() -> None:
    columns = [*COLUMNS[:2], Col("vm", hide_below=100), *COLUMNS[2:]]
    rows = [(*row[:2], "vm-0123456789ab", *row[2:]) for row in ROWS]
    for width, shown in ((80, False), (120, True)):
        console = Console(width=width, record=True, color_system=None)
        console.print(table(None, columns, rows, width=width))
        assert ("vm-0123456789ab" in console.export_text()) is shown


def test_fit_shares_the_room_out_evenly_and_never_past_what_a_column_needs() -> None:
    assert fit([5, 30], [3, 3], 100) == [5, 30]
    assert fit([5, 30, 30], [3, 3, 3], 35) == [5, 15, 15]
    assert fit([50, 50], [20, 10], 20) == [20, 10]  # less room than the minimums


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.085, "85 ms"), (2.44, "2.4 s"), (185, "3m 05s"), (3720, "1h 02m")],
)
def test_durations_read_like_a_person_says_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text
    assert ms(round(seconds * 1000)) == text
    assert ms(None) == ""


def test_a_cell_and_a_status_show_at_most_a_short_form_of_a_long_value() -> None:
    assert cell("a  b\n c\r").plain == "a  b\\x0a c\\x0d"  # (as `ticket show` shows it)
    long = cell("w" * 3_000_000)
    assert long.plain == "w" * NAME_CHARS + "… (3,000,000 characters)"
    assert "(1,000,000 characters)" in Text.from_markup(styled("s" * 1_000_000)).plain


@given(
    st.text(alphabet=st.sampled_from("ab\\[]/ #@:="), max_size=16),
    st.sampled_from(["{}", "[red]{}[/red]", "[bold]x[/bold] {} y", "{}[dim] z[/dim]"]),
)
def test_stored_text_prints_as_it_is_wherever_its_markup_goes(text: str, context: str) -> None:
    """`literal(text)` prints `text` (backslashes, brackets, `:emoji:` codes) alone, before
    a tag and after one, as the CLI's consoles render markup (no emoji codes): Rich's
    `escape` printed a text ending in one backslash with two when no tag followed it (a
    title `t\\` showed as `t\\\\`), one ending in two with one before a tag, and dropped the
    backslash of a `\\[` that starts no tag."""
    shown = Text.from_markup(context.format(literal(text)), emoji=False).plain
    assert shown == Text.from_markup(context.format("Q"), emoji=False).plain.replace("Q", text)
