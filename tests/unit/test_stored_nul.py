"""The engine's rule for a NUL in a step's text (docs/schema.md, "A NUL in a step's
text"): each NUL is stored as U+FFFD, in plain text and in every string and key of JSON
text alike, and nothing else of the text changes (an escaped backslash before `u0000` is
no NUL)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from swarm_engine.records import stored_json, stored_text

chars = st.sampled_from(["\x00", "\\", "u", "0", "a", "\ufffd", '"', "\u00e9"])
texts = st.text(chars, max_size=12)
values = st.recursive(
    st.none() | st.integers() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


def mended(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [mended(v) for v in value]
    if isinstance(value, dict):
        return {mended(k): mended(v) for k, v in value.items()}
    return value


@given(values)
def test_json_text_is_the_value_with_each_nul_as_fffd(value: Any) -> None:
    text = json.dumps(value, default=str)
    stored = stored_json(text)
    assert len(stored) == len(text)  # (a measured size still holds)
    assert json.loads(stored) == mended(value)


def test_plain_text_and_escaped_backslashes() -> None:
    assert stored_text("a\x00b\x00") == "a\ufffdb\ufffd"
    assert stored_json(json.dumps("\\u0000")) == json.dumps("\\u0000")
    assert stored_json(json.dumps("\\\x00")) == json.dumps("\\\ufffd")
    text = json.dumps({"no nul": "x"})
    assert stored_json(text) is text
