"""Stored text on the CLI's plain lines: shown, never obeyed (`cli/text.py`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from swarm_engine.cli.text import NAME_CHARS, brief, ms, visible


def test_control_and_invisible_characters_are_shown_as_escapes() -> None:
    assert visible("a\x1b[2Jb\nc\x07") == "a\\x1b[2Jb\\x0ac\\x07"
    assert visible("invoice\u202etxt.exe") == "invoice\\x202etxt.exe"  # a bidi override
    assert visible("pay\u200bpal") == "pay\\x200bpal"  # a zero-width space
    assert visible("café ✓") == "café ✓"


@given(st.one_of(st.floats(), st.integers(), st.text(), st.booleans(), st.none()))
def test_any_stored_duration_is_shown_on_one_line(value: object) -> None:
    shown = ms(value)
    assert isinstance(shown, str) and visible(shown) == shown


def test_a_long_name_is_cut_to_a_short_form_that_says_the_cut() -> None:
    assert brief("step-1") == "step-1" and brief(None) == "" and brief(7) == "7"
    assert brief("x" * NAME_CHARS) == "x" * NAME_CHARS
    cut = brief("a\nb" * 1_000_000)
    assert cut.endswith("… (3,000,000 characters)") and "\\x0a" in cut and "\n" not in cut
    assert len(cut) < 4 * NAME_CHARS
