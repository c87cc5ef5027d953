"""`jsonwire.top_level` reads a JSON object's chosen members alone, in one pass without
recursion: the usage of an answer `json.loads` cannot read (nested too deep)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from swarm_engine.jsonwire import top_level

KEYS = frozenset({"usage", "model"})
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from(["usage", "model", "content", "u", '"usage"', ""]), values))
def test_it_reads_what_json_loads_reads_of_those_members(obj: dict[str, Any]) -> None:
    body = json.dumps(obj).encode()
    assert top_level(body, KEYS) == {k: v for k, v in obj.items() if k in KEYS}


def test_it_reads_past_content_nested_thousands_of_levels_deep() -> None:
    deep = "[" * 10_000 + "]" * 10_000
    body = ('{"content": [' + deep + '], "model": "m", "usage": {"input_tokens": 3}}').encode()
    assert top_level(body, KEYS) == {"model": "m", "usage": {"input_tokens": 3}}


def test_anything_else_gives_what_it_can() -> None:
    assert top_level(b"[1, 2]", KEYS) == {}
    assert top_level(b"", KEYS) == {}
    assert top_level(b'{"usage": ' + b"[" * 5000 + b"]" * 5000 + b"}", KEYS) == {}
    assert top_level(b'{"a": "usage", "usage": 3}', KEYS) == {"usage": 3}
