"""`records.shown`: how a one-line error names a value from a row or a request."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from swarm_engine.records import SHOWN_CHARS, cut_message, shown


def test_a_short_value_is_named_whole() -> None:
    assert shown("echo") == "'echo'"
    assert shown(b"\x00") == "b'\\x00'"
    assert shown(12) == "12"


def test_a_long_value_is_cut_and_says_how_long_it_was() -> None:
    assert shown("a" * 100_000) == "'" + "a" * (SHOWN_CHARS - 1) + "… (100,000 characters)"
    assert shown(b"\xff" * 300).endswith("… (300 bytes)")
    assert shown(["x" * 300]).endswith("… (304 characters)")
    assert cut_message("m" * 1000, 10) == "mmmmmmmmmm… (1,000 characters)"


@given(st.one_of(st.text(), st.binary(), st.lists(st.text()), st.integers()))
def test_any_value_makes_a_bounded_line(value: object) -> None:
    line = shown(value, 20)
    assert len(line) <= 20 + len("… (10,000,000,000 characters)")
    assert "\n" not in line
