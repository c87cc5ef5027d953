"""A registry list's cursor is text a client sends back (`agent list --cursor`, the API's
`cursor`): whatever it holds is a `UsageError` saying so, or a key this list gave."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm_engine.errors import UsageError
from swarm_engine.registry.listing import MAX_CURSOR_CHARS, decode_cursor, key_cursor


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("raw", [b"[" * 8000, b'{"k":' * 1700, b"[" * 900 + b"]" * 900])
def test_a_cursor_nested_deep_is_refused_in_one_line(raw: bytes) -> None:
    """9,000 levels of `[` fit in a cursor's 12,000 characters: they ended `agent list`
    in a RecursionError traceback and the API's `/v1/agents` in a 500."""
    cursor = _cursor(raw)
    assert len(cursor) <= MAX_CURSOR_CHARS
    with pytest.raises(UsageError, match="cursor is not one this list gave"):
        decode_cursor(cursor)


@given(st.binary(max_size=9000))
def test_any_cursor_is_a_key_or_a_usage_error(raw: bytes) -> None:
    try:
        got = decode_cursor(_cursor(raw))
    except UsageError:
        return
    assert isinstance(got, int) or [type(part) for part in got] == [bytes, bytes]


def test_a_cursor_this_list_gave_reads_back() -> None:
    assert decode_cursor(key_cursor(b"agent", b"1.0.0")) == (b"agent", b"1.0.0")
