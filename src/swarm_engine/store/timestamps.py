"""Stored timestamps, read exactly as SQLite's date functions read them.

Any client may write a timestamp column, and the store's SQL compares them as
`julianday(x, 'auto')`. Python reads a value to the instant SQLite reads, to the
millisecond (SQLite's own resolution), and refuses what SQLite refuses; a test holds the
two to each other (tests/unit/test_sqlite_timestamps.py). The rules, as in SQLite 3.40
(date.c):

- Text `[-]YYYY-MM-DD`, then any run of spaces and `T`s, then optionally a time of day;
  or a time of day alone (on 2000-01-01). A time is `HH:MM[:SS[.fff...]]` (hour 0-24,
  any number of fraction digits), then optionally spaces, `Z`/`z` or `+HH:MM`/`-HH:MM`
  (hours up to 14), then spaces. No zone means UTC. A day up to 31 in any month rolls
  over (`2026-02-30` is 2026-03-02), as `24:00` is the next day's midnight. Upper-case `T`
  only; `+0100` is refused.
- A number (stored as one, or text that reads as one, sign and exponent allowed): a
  Julian day number from 0 to 5373484.5, else unix seconds up to 9999-12-31.
- `now` (any case): the time of reading, as every SQL statement of the store reads it. A
  stored `now` is therefore always current: its age is 0. The store's lease and
  heartbeat statements refuse that reading (a lease or heartbeat renewed by text would
  never run out): there a `now` is expired / stale. Write
  `strftime('%Y-%m-%dT%H:%M:%fZ','now')`.

SQLite holds instants from 4714 BC; Python's `datetime` starts at year 1, so an instant
before 0001-01-01T00:00:00Z (year 0 included) is refused as "before year 1". A blob is
refused although SQLite would read its bytes as text.

PostgreSQL's `timestamptz` holds `infinity`, `-infinity` and years from 4713 BC to
294276 AD; its driver hands a value Python cannot hold over as `UnheldInstant` (the
server's text), which `parse_timestamp` refuses with the reason: a defect of that row
alone, never an error of the statement that read it.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from swarm_engine.records import shown

UNIX_EPOCH_JD = 2440587.5
_DAY_MS = 86_400_000
_YEAR_1_MS = 148_731_163_200_000  # 0001-01-01T00:00:00Z as a Julian day in milliseconds
_MAX_MS = 464_269_060_799_999  # 9999-12-31T23:59:59.999Z, SQLite's last valid instant
_SPACE = " \t\n\v\f\r"  # sqlite3Isspace
_NUMBER = re.compile(
    r"[ \t\n\v\f\r]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t\n\v\f\r]*"
)  # what sqlite3AtoF reads as a whole number
_YEAR_1 = datetime(1, 1, 1, tzinfo=UTC)
_CANONICAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
"""`format_ts`'s form, which every engine writes: read by `datetime.fromisoformat`."""


class UnheldInstant(str):
    """A PostgreSQL `timestamptz` that Python's `datetime` cannot hold, as the server's
    text (`infinity`, `-infinity`, `294276-12-31 00:00:00+00`, `4713-01-01 00:00:00+00 BC`)."""

    __slots__ = ()

    @property
    def why(self) -> str:
        """Why the engine cannot hold it, as a defect's reason."""
        text = self.strip().lower()
        if text in ("infinity", "-infinity"):
            return f"{text}, which the engine cannot hold"
        where = "before year 1" if text.endswith("bc") else "after year 9999"
        return f"{where}, which the engine cannot hold ({shown(str(self), 30)})"


def format_ts(value: datetime | None) -> str | None:
    """A timestamp as stored by the engine: UTC ISO-8601, milliseconds, `Z`."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_timestamp(value: Any) -> datetime | None:
    """A stored timestamp as an aware UTC datetime (None for NULL), read as SQLite's
    `julianday(value, 'auto')` reads it (see the module docstring). Raises ValueError,
    and only ValueError, for anything SQLite does not read as a time, and for an instant
    before year 1."""
    if value is None:
        return None
    if isinstance(value, UnheldInstant):
        raise ValueError(value.why)
    if type(value) is str and _CANONICAL.fullmatch(value):  # what the engine writes
        try:
            return datetime.fromisoformat(value)  # (the same instant, four times faster)
        except ValueError:  # hour 24, February 30th: read as SQLite reads them, below
            pass
    ms = julian_ms(value)
    if ms is None:
        raise ValueError(f"not a timestamp ({shown(value, 30)})")
    if ms < _YEAR_1_MS:
        raise ValueError(f"before year 1, which the engine cannot hold ({shown(value, 30)})")
    return _YEAR_1 + timedelta(milliseconds=ms - _YEAR_1_MS)


def julian_ms(value: Any) -> int | None:
    """The Julian day, in whole milliseconds, that SQLite's `julianday(value, 'auto')`
    gives for a stored value (a text, an integer or a real), None where it gives NULL."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None  # a blob, or a Python value SQLite never stores
    if isinstance(value, str):
        text = value.split("\x00", 1)[0]  # SQLite reads text as a C string
        if _NUMBER.fullmatch(text):
            value = text
        else:
            return _from_text(text)
    try:
        number = float(value)
    except OverflowError:  # an int past a double: past any time SQLite reads
        return None
    return _from_number(number)


def _from_number(r: float) -> int | None:
    if 0.0 <= r < 5373484.5:  # a Julian day number
        ms = int(r * 86400000.0 + 0.5)
    elif -210866760000 <= r <= 253402300799:  # unix seconds ('auto')
        ms = int(r * 1000.0 + 210866760000000.0 + 0.5)
    else:
        return None  # NaN and infinities too
    return ms if 0 <= ms <= _MAX_MS else None


def _from_text(text: str) -> int | None:
    if text.lower() == "now":
        now = datetime.now(UTC)
        return _YEAR_1_MS + (now - _YEAR_1) // timedelta(milliseconds=1)
    parts = _date(text)
    if parts is None:
        clock = _clock(text, 0)
        if clock is None:
            return None
        parts = (2000, 1, 1, *clock)
    return _compute_ms(*parts)


def _digits(text: str, at: int, count: int, low: int, high: int) -> int | None:
    chunk = text[at : at + count]
    if len(chunk) != count or not all("0" <= c <= "9" for c in chunk):
        return None
    number = int(chunk)
    return number if low <= number <= high else None


def _date(text: str) -> tuple[int, int, int, int, int, float, int] | None:
    """`[-]YYYY-MM-DD[ T...][time]` as (Y, M, D, h, m, s, zone minutes), or None."""
    at = 1 if text[:1] == "-" else 0
    year = _digits(text, at, 4, 0, 9999)
    month = _digits(text, at + 5, 2, 1, 12) if text[at + 4 : at + 5] == "-" else None
    day = _digits(text, at + 8, 2, 1, 31) if text[at + 7 : at + 8] == "-" else None
    if year is None or month is None or day is None:
        return None
    at += 10
    while at < len(text) and (text[at] in _SPACE or text[at] == "T"):
        at += 1
    clock = _clock(text, at)
    if clock is None:
        if at != len(text):
            return None
        clock = (0, 0, 0.0, 0)
    return (-year if text[:1] == "-" else year, month, day, *clock)


def _clock(text: str, at: int) -> tuple[int, int, float, int] | None:
    """`HH:MM[:SS[.fff]]` then a zone, from `at` to the end, or None."""
    hour = _digits(text, at, 2, 0, 24)
    minute = _digits(text, at + 3, 2, 0, 59) if text[at + 2 : at + 3] == ":" else None
    if hour is None or minute is None:
        return None
    at += 5
    seconds = 0.0
    if text[at : at + 1] == ":":
        whole = _digits(text, at + 1, 2, 0, 59)
        if whole is None:
            return None
        at += 3
        fraction = 0.0
        if text[at : at + 1] == "." and "0" <= text[at + 1 : at + 2] <= "9":
            scale = 1.0  # the same double arithmetic as SQLite (inf/inf: NaN, refused)
            at += 1
            while at < len(text) and "0" <= text[at] <= "9":
                fraction = fraction * 10.0 + float(ord(text[at])) - 48.0
                scale *= 10.0
                at += 1
            fraction /= scale
        seconds = whole + fraction
    zone = _zone(text, at)
    return None if zone is None else (hour, minute, seconds, zone)


def _zone(text: str, at: int) -> int | None:
    """Minutes east of UTC of an optional zone from `at` to the end, or None."""
    while at < len(text) and text[at] in _SPACE:
        at += 1
    if at == len(text):
        return 0
    zone = 0
    if text[at] in "Zz":
        at += 1
    elif text[at] in "+-":
        hours = _digits(text, at + 1, 2, 0, 14)
        minutes = _digits(text, at + 4, 2, 0, 59) if text[at + 3 : at + 4] == ":" else None
        if hours is None or minutes is None:
            return None
        zone = (1 if text[at] == "+" else -1) * (hours * 60 + minutes)
        at += 6
    else:
        return None
    while at < len(text) and text[at] in _SPACE:
        at += 1
    return zone if at == len(text) else None


def _cdiv(a: int, b: int) -> int:
    """C's integer division (towards zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _compute_ms(
    year: int, month: int, day: int, hour: int, minute: int, seconds: float, zone: int
) -> int | None:
    """SQLite's computeJD: the proleptic Gregorian calendar, days past a month's end
    rolling over, then the validity check of the result."""
    if year < -4713 or year > 9999:
        return None
    if month <= 2:
        year -= 1
        month += 12
    a = _cdiv(year, 100)
    b = 2 - a + _cdiv(a, 4)
    x1 = _cdiv(36525 * (year + 4716), 100)
    x2 = _cdiv(306001 * (month + 1), 10000)
    ms = int((x1 + x2 + day + b - 1524.5) * _DAY_MS)
    sub = seconds * 1000 + 0.5
    if not math.isfinite(sub):
        return None
    ms += hour * 3_600_000 + minute * 60_000 + int(sub) - zone * 60_000
    return ms if 0 <= ms <= _MAX_MS else None
