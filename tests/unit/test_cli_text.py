"""Stored text on the CLI's plain lines: shown, never obeyed (`cli/text.py`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from swarm_engine.cli.text import NAME_CHARS, brief, ms, visible


def test_control_and_invisible_characters_are_shown_as_escapes() -> None:
    assert visible("a\x1b[2Jb\nc\x07") == "a\\x1b[2Jb\\x0ac\\x07"
    assert visible("invoice\u202etxt.exe") == "invoice\\u202etxt.exe"  # a bidi override
    assert visible("pay\u200bpal") == "pay\\u200bpal"  # a zero-width space
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


BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


def test_one_escaping_for_lines_blocks_and_log_records() -> None:
    """`visible_lines` (logs, a whole result) and the text log formatter escape what
    `visible` escapes, bidi controls included; only a block keeps newline and tab."""
    import logging

    from swarm_engine.cli.logsetup import TextFormatter
    from swarm_engine.cli.text import visible_lines

    text = f"a\x1b]0;T\x07\x9b\x7f{BIDI}\tb\nc"
    assert visible_lines(text) == visible(text).replace("\\x09", "\t").replace("\\x0a", "\n")
    assert not any(c in visible_lines(text) for c in BIDI + "\x1b\x07\x9b\x7f")
    assert visible("\u061c") == "\\u061c"  # not `\x61c`, which reads as `a` and `c`
    record = logging.LogRecord("x", logging.WARNING, "f", 1, text, None, None)
    try:
        raise ValueError(text)
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    shown = TextFormatter("%(message)s").format(record)
    assert shown.startswith(visible(text)) and not any(c in shown for c in BIDI + "\x1b\x07")


HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _code_points(ranges: tuple[tuple[int, int], ...]) -> set[int]:
    return {code for start, end in ranges for code in range(start, end + 1)}


def test_the_escaped_characters_are_every_control_and_format_character() -> None:
    """`FORMAT_CHARS` is written out (computing it costs every start 0.2 s): it is
    exactly the code points `unicodedata` puts in Cc, Cf, Cs, Zl and Zp."""
    import sys
    import unicodedata

    from swarm_engine.cli.text import FORMAT_CHARS

    wanted = {
        code
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) in HIDDEN_CATEGORIES
    }
    assert _code_points(FORMAT_CHARS) == wanted


def test_soft_hyphens_tags_and_variation_selectors_are_escaped() -> None:
    """Printed raw before: U+00AD (soft hyphen), tag characters (U+E0000-U+E007F, which
    can spell out hidden text), other format characters, variation selectors."""
    from swarm_engine.cli.text import visible_lines

    assert visible("pay\u00adpal") == "pay\\xadpal"
    assert visible("a\U000e0041\U000e0042b") == "a\\U000e0041\\U000e0042b"
    assert visible("\u2064\u180e\ufff9x\u034f\ufe0f\U000e0100") == (
        "\\u2064\\u180e\\ufff9x\\u034f\\ufe0f\\U000e0100"
    )
    assert visible_lines("a\u00ad\tb\n\U000e007f") == "a\\xad\tb\n\\U000e007f"


@given(st.text(st.characters(exclude_categories=())))
def test_no_invisible_character_is_ever_printed(text: str) -> None:
    """Over any text (lone surrogates too): what `visible` prints holds no character of
    Cc, Cf, Cs, Zl, Zp nor a default-ignorable one; `visible_lines` only newline and tab
    of them; and the escapes keep everything else as it was."""
    import unicodedata

    from swarm_engine.cli.text import IGNORABLE_CHARS, visible_lines

    ignorable = _code_points(IGNORABLE_CHARS)

    def hidden(c: str) -> bool:
        return unicodedata.category(c) in HIDDEN_CATEGORIES or ord(c) in ignorable

    line, block = visible(text), visible_lines(text)
    assert not any(hidden(c) for c in line)
    assert not any(hidden(c) and c not in "\t\n" for c in block)
    assert block.count("\n") == text.count("\n") and block.count("\t") == text.count("\t")
    if not any(hidden(c) for c in text):
        assert line == text == block
