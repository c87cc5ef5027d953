"""Stored JSON is read back as something every reader can write out again: a lone UTF-16
surrogate (from an escape such as `\\udcff`) becomes U+FFFD, and a value nested deeper
than `MAX_READ_DEPTH` is a defect with the fallback value, never a server error later."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from swarm_engine.errors import UsageError
from swarm_engine.records import (
    MAX_READ_DEPTH,
    TooDeep,
    finite_only,
    readable_json,
    strict_dumps,
    strict_json,
)
from swarm_engine.service.values import check_json
from swarm_engine.store.rows import Decoder, decode_record

ANY = TypeAdapter(Any)
PYDANTIC_DEPTH = 254  # what pydantic's serializer writes (255 levels fail)

# every code point, lone surrogates included (st.text leaves them out by default)
any_char = st.characters(codec=None, exclude_categories=())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(any_char, max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(any_char, max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)  # fmt: skip


def writable(value: Any, envelope: int = 0) -> None:
    """What the API, the dashboard and `--json` do with a value, inside `envelope` levels."""
    for _ in range(envelope):
        value = {"around": [value]}
    ANY.dump_json(value)
    json.dumps(value, ensure_ascii=False).encode("utf-8")


def nested(depth: int) -> str:
    return '{"a":' * depth + "0" + "}" * depth


@settings(max_examples=300)
@given(st.one_of(st.text(any_char), json_values.map(json.dumps), json_values.map(
    lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass").decode(
        "utf-8", "replace"))))  # fmt: skip
def test_any_stored_text_decodes_to_something_writable(text: str) -> None:
    d = Decoder({"inputs": text, "outputs": text})
    writable(d.json("inputs"), envelope=20)
    writable(decode_record({"outputs": text, "spec": text}), envelope=20)


def replaced(value: Any) -> Any:
    """`value` with each lone surrogate as U+FFFD (the reference, written plainly)."""
    if isinstance(value, str):
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    if isinstance(value, list):
        return [replaced(v) for v in value]
    if isinstance(value, dict):
        return {replaced(k): replaced(v) for k, v in value.items()}
    return value


@given(json_values)
def test_surrogates_become_the_replacement_character_and_the_rest_is_kept(value: Any) -> None:
    got = readable_json(json.dumps(value))
    writable(got)
    assert got == replaced(value)


def test_a_lone_surrogate_is_replaced_in_keys_and_values() -> None:
    assert readable_json('{"a":"\\udcff","\\ud800k":["x\\ud800y"]}') == {
        "a": "\ufffd",
        "\ufffdk": ["x\ufffdy"],
    }
    assert readable_json('"\\ud83d\\ude00"') == "\U0001f600"  # a pair is one character


@pytest.mark.parametrize("depth", [MAX_READ_DEPTH + 1, 255, 300, 900, 990, 5000])
def test_a_value_nested_too_deep_is_a_defect_with_the_fallback(depth: int) -> None:
    d = Decoder({"inputs": nested(depth)})
    assert d.json_object("inputs") == {}
    assert d.defects == [f"inputs: JSON nested deeper than {MAX_READ_DEPTH} levels"]
    record = decode_record({"outputs": nested(depth), "spec": nested(depth)})
    assert record["outputs"] is None and record["spec"] is None
    assert len(record["defects"]) == 2


def test_the_depth_bound_leaves_room_for_every_reader() -> None:
    value = readable_json(nested(MAX_READ_DEPTH))
    assert value is not None
    writable(value, envelope=(PYDANTIC_DEPTH - MAX_READ_DEPTH) // 2 - 1)  # ~120 levels more


any_numbers = st.recursive(
    st.none() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)


def _refuse(word: str) -> Any:
    raise AssertionError(f"not strict JSON: {word}")


@given(any_numbers)
def test_strict_dumps_writes_strict_json_and_keeps_every_finite_number(value: Any) -> None:
    text = strict_dumps(value, indent=2, default=str)
    # a strict reader: the bare words NaN / Infinity are refused (a key or a string may
    # still hold those letters)
    assert json.loads(text, parse_constant=_refuse) == finite_only(value)
    if json.dumps(value, allow_nan=True, default=str) == json.dumps(
        finite_only(value), default=str
    ):
        assert text == json.dumps(value, indent=2, default=str)


def test_a_number_beyond_json_is_null() -> None:
    assert strict_dumps({"c": float("inf"), "d": [float("nan"), -float("inf"), 1e308]}) == (
        '{"c": null, "d": [null, null, 1e+308]}'
    )


@pytest.mark.parametrize(
    "number",
    [int(sys.float_info.max), -int(sys.float_info.max), 10**308, -(10**308)],
)
def test_an_integer_within_a_doubles_range_is_read_as_it_is(number: int) -> None:
    assert readable_json(f'{{"s": {number}}}') == {"s": number}
    assert check_json({"s": number}, "inputs") == {"s": number}


@pytest.mark.parametrize("number", [2**1024, -(2**1024), 10**400, -(10**4000)])
def test_an_integer_past_a_doubles_range_is_refused_as_1e400_is(number: int) -> None:
    """PostgreSQL's `jsonb` keeps `1e400` as 401 digits, which SQLite reads as infinity:
    every reader refuses both alike, and a client cannot store one either."""
    digits = len(str(abs(number)))
    line = f"number {'-' if number < 0 else ''}{str(abs(number))[:12]}… ({digits:,} digits) is out of range"
    for text in (f'{{"s": {number}}}', f'{{"s": {number}}}'.encode(), f"[1, [{number}]]"):
        with pytest.raises(ValueError, match=re.escape(line)):
            readable_json(text)
    d = Decoder({"inputs": f'{{"s": {number}}}'})
    assert d.json_object("inputs") == {}
    assert d.defects == [f"inputs: not valid JSON ({line})"]
    with pytest.raises(UsageError, match=re.escape(f"inputs.s: {line}")):
        check_json({"s": number}, "inputs")


def test_long_digits_in_text_or_a_fraction_are_no_integer() -> None:
    assert readable_json(json.dumps(["1" * 500])) == ["1" * 500]
    assert readable_json("0." + "0" * 400 + "1") == 0.0


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000])
def test_json_nested_past_the_reader_is_a_value_error_never_a_recursion_error(text: str) -> None:
    """`strict_json` (the CLI's `--inputs-json` and `--input`, the JSON settings) let
    Python's RecursionError out for text nested thousands of levels deep: a traceback."""
    with pytest.raises(TooDeep, match=f"nested deeper than {MAX_READ_DEPTH} levels"):
        strict_json(text, unique_keys=True)
