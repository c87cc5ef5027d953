"""Numbers past the range of a double in JSON text: every JSON reader of the stores
refuses them (`records.strict_json`), as SQLite's reads `1e400` as infinity and
PostgreSQL's `jsonb` keeps it as an integer of 401 digits."""

from __future__ import annotations

import re
import sys


def fits_double(value: int) -> bool:
    """Whether the integer `value` is within the range of a double (about 1.8e308), as
    every number a JSON reader takes must be (SQLite's reads `1e400` as infinity)."""
    try:
        float(value)
    except OverflowError:
        return False
    return True


def out_of_range(value: int) -> str:
    """`number 100000000000… (401 digits) is out of range`: the line for an integer past
    the range of a double (`fits_double`), as `1e400`'s is `number 1e400 is out of
    range`."""
    sign = "-" if value < 0 else ""
    try:
        digits = str(abs(value))
    except ValueError:  # (more than Python converts: `TooManyDigits`)
        return f"number of more than {sys.get_int_max_str_digits()} digits is out of range"
    return f"number {sign}{digits[:12]}… ({len(digits):,} digits) is out of range"


_LONG_DIGITS = re.compile(r"(?<![0-9])[0-9]{309}")
_LONG_DIGITS_BYTES = re.compile(rb"(?<![0-9])[0-9]{309}")
"""309 digits in a row: the least an integer past the range of a double has (a run is
tried once, at its first digit, so the search costs linear time)."""


def long_digits(text: str | bytes) -> bool:
    """Whether `text` holds 309 digits in a row (`_LONG_DIGITS`): text with fewer digits
    in all (counted in C, some 3 ms a MiB) is not searched (some 17 ms a MiB)."""
    if len(text) < 309:
        return False
    if isinstance(text, bytes):
        return sum(text.count(d) for d in b"0123456789") >= 309 and bool(
            _LONG_DIGITS_BYTES.search(text)
        )
    digits = sum(text.count(d) for d in "0123456789")
    return digits >= 309 and bool(_LONG_DIGITS.search(text))
