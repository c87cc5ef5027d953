"""Python reads a stored timestamp exactly as the store's SQL does (`julianday(x, 'auto')`
of the SQLite the engine runs on): what SQLite reads, to the same millisecond; what it
refuses, refused. Only `now` (the time of reading) and instants before year 1 (which
`datetime` cannot hold) are read differently, as documented in store/timestamps.py."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from swarm_engine.store.timestamps import julian_ms, parse_timestamp

_CONN = sqlite3.connect(":memory:")
_YEAR_1_MS = 148_731_163_200_000


def sqlite_ms(value: object) -> int | None:
    """SQLite's own reading, in whole milliseconds of a Julian day."""
    (jd,) = _CONN.execute("SELECT julianday(?, 'auto')", (value,)).fetchone()
    return None if jd is None else round(jd * 86_400_000)


def read_ms(value: object) -> int | None:
    ms = julian_ms(value)
    if ms is not None and ms >= _YEAR_1_MS:  # and the datetime says the same instant
        stamp = parse_timestamp(value)
        assert stamp is not None
        assert round((stamp - datetime(1, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1)) == (
            ms - _YEAR_1_MS
        )
    return ms


DIGIT = st.sampled_from("0123456789")


def _n(count: int) -> st.SearchStrategy[str]:
    return st.text(DIGIT, min_size=count, max_size=count)


SPACES = st.text(st.sampled_from(" \t\nT"), max_size=3)
ZONE = st.one_of(
    st.just(""),
    st.sampled_from(["Z", "z", " Z ", "+00:00", "-00:00", "+0100", "+1:00", "+14:59", "-15:00"]),
    st.builds(lambda s, h, m: f"{s}{h}:{m}", st.sampled_from("+-"), _n(2), _n(2)),
)
FRACTION = st.one_of(st.just(""), st.builds(lambda d: "." + d, st.text(DIGIT, max_size=40)))
CLOCK = st.builds(
    lambda h, m, s, f, z: f"{h}:{m}{s and ':' + s}{f if s else ''}{z}",
    _n(2),
    _n(2),
    st.one_of(st.just(""), _n(2)),
    FRACTION,
    ZONE,
)
DATE = st.builds(
    lambda neg, y, mo, d, sep, clock: f"{neg}{y}-{mo}-{d}{sep}{clock}",
    st.sampled_from(["", "-"]),
    _n(4),
    _n(2),
    _n(2),
    SPACES,
    st.one_of(st.just(""), CLOCK),
)
NUMBER_TEXT = st.one_of(
    st.from_regex(r"\A[ \t]?[+-]?\d{0,12}\.?\d{0,6}([eE][+-]?\d{1,3})?[ \t]?\Z"),
    st.floats(allow_nan=False).map(repr),
    st.integers(-(2**63), 2**63 - 1).map(str),
)
NOISE = st.text(st.sampled_from("0123456789-:. tTZz+eE\x00ow"), max_size=30)
NUMBERS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-210_866_760_001, 253_402_300_800),
    st.floats(),
    st.floats(-1.0, 5_373_485.0),
    st.floats(-210_866_760_001.0, 253_402_300_800.0),
)
STAMPS = st.one_of(DATE, CLOCK, NUMBER_TEXT, NOISE, NUMBERS, st.text(max_size=30))


@settings(max_examples=3000, deadline=None)
@given(STAMPS)
@example("2026-12-02T10:00:00z")
@example("2026-12-02t10:00:00Z")  # SQLite refuses a lower-case t
@example("2026-12-02T24:00:00Z")
@example("2026-02-30")
@example("10:00")
@example("10:00:00.123")
@example("2026-12-02T10:00")
@example("2026-12-02T10:00:00.123456789Z")
@example("2026-12-02T10:00:00.5+01:00")
@example("2026-12-02T10:00:00+0100")  # SQLite refuses a zone without its colon
@example("0000-01-01 00:00:00")
@example("-4713-11-24 12:00:00")
@example("9999-12-31 23:59:59.999")
@example("9999-12-31 23:59:59.9999")
@example("2026-12-02T10:00:00." + "9" * 400)
@example(2461011.5)
@example(2461011)
@example("1764547200")
@example(" 1e3 ")
@example("2026-12-02\x00junk")
@example(1764547200123)  # unix milliseconds: past 9999-12-31 as seconds, refused
def test_python_reads_every_value_as_sqlite_does(value: object) -> None:
    assert read_ms(value) == sqlite_ms(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-02T10:00:00z", "2026-12-02T10:00:00+00:00"),
        ("2026-12-02T24:00:00Z", "2026-12-03T00:00:00+00:00"),
        ("10:00", "2000-01-01T10:00:00+00:00"),
        ("2026-12-02T10:00", "2026-12-02T10:00:00+00:00"),
        ("2026-12-02T10:00:00.1234567Z", "2026-12-02T10:00:00.123000+00:00"),
        ("2026-12-02T10:00:00.5-01:30", "2026-12-02T11:30:00.500000+00:00"),
        (2461011.5, "2025-12-02T00:00:00+00:00"),
        (1764547200, "2025-12-01T00:00:00+00:00"),
    ],
)
def test_forms_sqlite_accepts_name_their_instant(value: object, expected: str) -> None:
    stamp = parse_timestamp(value)
    assert stamp is not None and stamp.isoformat() == expected


def test_now_is_the_time_of_reading_as_in_sqlite() -> None:
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    stamp = parse_timestamp("NOW")
    assert stamp is not None and before <= stamp <= datetime.now(UTC)


@pytest.mark.parametrize("value", ["0000-01-01 00:00:00", "-0001-06-01", 0, 1721425.4])
def test_an_instant_before_year_1_is_refused_by_name(value: object) -> None:
    assert sqlite_ms(value) is not None
    with pytest.raises(ValueError, match="before year 1"):
        parse_timestamp(value)


CANONICAL = st.builds(
    lambda y, mo, d, h, mi, s, ms: f"{y}-{mo}-{d}T{h}:{mi}:{s}.{ms}Z",
    _n(4), _n(2), _n(2), _n(2), _n(2), _n(2), _n(3),
)  # fmt: skip


@given(CANONICAL)
@example("2026-12-02T24:00:00.000Z")
@example("2026-02-30T10:00:00.000Z")
@example("0000-01-01T00:00:00.000Z")
@example("2026-12-02T23:59:60.000Z")
def test_the_engines_own_form_is_read_as_sqlite_reads_it(value: str) -> None:
    """`format_ts`'s shape has a fast path (`datetime.fromisoformat`): whatever digits it
    holds, the instant is SQLite's, or the value is refused where SQLite gives NULL."""
    expected = sqlite_ms(value)
    if expected is None or expected < _YEAR_1_MS:
        with pytest.raises(ValueError):
            parse_timestamp(value)
        return
    stamp = parse_timestamp(value)
    assert stamp is not None
    got = round((stamp - datetime(1, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))
    assert got == expected - _YEAR_1_MS
