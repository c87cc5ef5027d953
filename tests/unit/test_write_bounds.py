"""The pure rules behind the engine's bounded writes: a value's JSON measured exactly
without being written (`records.json_size`), the caps' one-line refusals
(`engine.bounds`), and an outputs file that may not set the engine's own keys
(`agents.files.merged_outputs`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from swarm_engine.agents.files import merged_outputs
from swarm_engine.engine.bounds import (
    combined_json,
    result_json,
    step_inputs_json,
    step_outputs_json,
)
from swarm_engine.errors import AgentError
from swarm_engine.records import MAX_READ_DEPTH, JsonText, json_size, json_text, readable_json
from swarm_engine.templating import TemplateError, render

MIB = 1024 * 1024


class Odd:
    def __str__(self) -> str:
        return "odd\n"


@pytest.mark.parametrize(
    "value",
    [
        {},
        [],
        "",
        {"a": [1, -2.5, None, True, False, 'é\n"\\\x00\x7f', {"x": ()}]},
        {7: "int key", 2.5: "float key", None: "null key", True: "bool key"},
        ["\ud800 lone", "😀 astral", 10**40, 1e300],
        {"long": "ab\u00e9\n" * (MIB // 2)},  # measured a megabyte at a time
        {"not json": Odd()},  # written as `str` gives it, as the store writes it
    ],
)
def test_the_size_is_that_of_the_text_the_store_writes(value: Any) -> None:
    assert json_size(value) == len(json.dumps(value, default=str))
    assert json_text(value) == json.dumps(value, default=str)


def test_a_value_shared_many_times_is_counted_each_time() -> None:
    """Ten references to one 8 MiB string: 80 MiB counted, the string measured once."""
    x = "z" * (8 * MIB)
    shared = {f"v{i}": x for i in range(10)}
    assert json_size(shared) == 10 * (8 * MIB + 2) + 10 * len('"v0": ') + 2 + 2 * 9


def test_a_cycle_is_refused_as_json_refuses_it() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        json_size(loop)


def test_step_inputs_at_the_cap_are_written_one_byte_more_refused() -> None:
    pad = 8 * MIB - len('{"x": ""}')
    at_cap = step_inputs_json({"x": "y" * pad})
    assert len(at_cap.text) == 8 * MIB
    with pytest.raises(AgentError) as caught:
        step_inputs_json({"x": "y" * (pad + 1)})
    assert str(caught.value) == (
        "8,388,609 bytes of JSON, more than the 8 MiB a step's inputs may hold"
    )


def test_inputs_that_are_not_an_object_are_measured_as_their_row_holds_them() -> None:
    assert step_inputs_json("text").text == '{"value": "text"}'


def test_step_outputs_over_4_mib_are_refused_with_the_size() -> None:
    with pytest.raises(AgentError) as caught:
        step_outputs_json({"x": "é" * MIB})  # 2 MiB of UTF-8, 6 MiB as stored (`\u00e9`)
    size = len(json.dumps({"x": "é" * MIB}))
    assert str(caught.value) == (
        f"outputs: {size:,} bytes of JSON, more than the 4 MiB a step's outputs may hold"
        " (not stored)"
    )


def test_leaf_outputs_are_joined_as_json_writes_them_and_bounded() -> None:
    parts = {"a": {"stdout": "1\n"}, 'b"q': {"n": [1, 2]}}
    joined = combined_json({k: JsonText(json.dumps(v)) for k, v in parts.items()})
    assert joined.text == json.dumps(parts)
    three = JsonText(json.dumps({"blob": "q" * (3 * MIB)}))
    with pytest.raises(AgentError) as caught:
        combined_json({"s0": three, "s1": three, "s2": three})
    size = len(json.dumps({f"s{i}": {"blob": "q" * (3 * MIB)} for i in range(3)}))
    assert str(caught.value) == (
        f"result: {size:,} bytes of JSON, more than the 8 MiB a ticket's result may hold"
        " (not stored)"
    )


def test_a_rendered_result_over_8_mib_is_refused() -> None:
    blob = "r" * (3 * MIB)
    with pytest.raises(AgentError, match=r"^result: 9,437,2\d\d bytes of JSON"):
        result_json({"a": blob, "b": blob, "c": blob})


def test_an_outputs_file_adds_keys_of_its_own() -> None:
    own = {"stdout": "out", "stderr": "", "exit_code": 0}
    assert merged_outputs(own, {"answer": 42}) == {**own, "answer": 42}
    assert merged_outputs(own, None) == own
    assert merged_outputs(own, {}) == own


@pytest.mark.parametrize(
    ("written", "named"),
    [
        ({"stdout": "FAKE", "exit_code": 99}, "stdout, exit_code"),
        ({"stderr": ""}, "stderr"),
        ({"ok": 1, "stdout_bytes": 5}, "stdout_bytes"),  # only the engine says a stream was cut
        ({"stderr_bytes": 0}, "stderr_bytes"),
    ],
)
def test_an_outputs_file_setting_the_engines_keys_is_refused(
    written: dict[str, Any], named: str
) -> None:
    own = {"stdout": "real", "stderr": "", "exit_code": 0}
    with pytest.raises(AgentError) as caught:
        merged_outputs(own, written)
    assert str(caught.value) == (
        f"$SWARM_OUTPUTS sets {named}: keys the engine fills itself (stdout, stderr,"
        " exit_code, stdout_bytes, stderr_bytes); write them under other names"
    )


def test_text_built_by_references_is_refused_before_it_is_made() -> None:
    """One 1 MiB input named in text many times: refused once the text would pass the
    bound, never joined; named as whole values it is shared, not built."""
    context = {"inputs": {"x": "z" * MIB, "n": {"k": "v" * MIB}}}
    many = {"a": " ".join(["${inputs.x}"] * 9)}
    with pytest.raises(TemplateError) as caught:
        render(many, context, max_text=8 * MIB)
    assert str(caught.value) == "the text its references build is more than 8,388,608 characters"
    across = {f"k{i}": "-${inputs.n}" for i in range(9)}  # JSON of a value, over many keys
    with pytest.raises(TemplateError):
        render(across, context, max_text=8 * MIB)
    whole = render({f"v{i}": "${inputs.x}" for i in range(20)}, context, max_text=8 * MIB)
    assert all(v is context["inputs"]["x"] for v in whole.values())
    assert render("a ${inputs.x}", context, max_text=MIB + 2) == "a " + "z" * MIB


def _deep(levels: int, leaf: Any = 0) -> Any:
    """`leaf` inside `levels` lists."""
    for _ in range(levels):
        leaf = [leaf]
    return leaf


def test_step_inputs_nested_as_deep_as_the_readers_read_are_written_one_level_more_refused() -> (
    None
):
    fits = step_inputs_json({"x": _deep(MAX_READ_DEPTH - 1)})
    assert fits.depth == MAX_READ_DEPTH
    assert readable_json(fits.text) == {"x": _deep(MAX_READ_DEPTH - 1)}
    line = f"JSON nested deeper than the {MAX_READ_DEPTH} levels a step's inputs may have"
    with pytest.raises(AgentError, match=f"^{line}$"):
        step_inputs_json({"x": _deep(MAX_READ_DEPTH)})
    with pytest.raises(AgentError, match=f"^{line}$"):  # (a list is stored as {"value": ...})
        step_inputs_json(_deep(MAX_READ_DEPTH))
    with pytest.raises(AgentError, match=f"^{line}$"):  # far deeper: never a RecursionError
        step_inputs_json({"x": _deep(5000)})


def test_a_shared_value_is_refused_where_it_is_named_deepest() -> None:
    """A template's value is measured once: named again further down, its depth counts
    there too (a ticket input of 60 levels named at the top and 80 levels down)."""
    shared = _deep(60)
    with pytest.raises(AgentError, match="nested deeper than the 128 levels"):
        step_inputs_json({"near": shared, "far": _deep(80, shared)})
    assert step_inputs_json({"near": shared, "far": _deep(60, shared)}).depth == 121


def test_outputs_and_results_nested_past_what_readers_read_are_refused() -> None:
    with pytest.raises(AgentError, match=r"^outputs: JSON nested deeper than the 128 levels a step's outputs may have \(not stored\)$"):  # fmt: skip
        step_outputs_json({"v": _deep(128)})
    with pytest.raises(AgentError, match=r"^result: JSON nested deeper than the 128 levels a ticket's result may have \(not stored\)$"):  # fmt: skip
        result_json({"v": _deep(128)})
    # leaf outputs joined by step id nest one level deeper than the deepest of them
    deepest = step_outputs_json({"v": _deep(127)})
    assert deepest.depth == 128
    with pytest.raises(AgentError, match=r"^result: JSON nested deeper than the 128 levels"):
        combined_json({"a": step_outputs_json({"v": 1}), "b": deepest})
    joined = combined_json({"a": step_outputs_json({"v": _deep(126)})})
    assert joined.depth == 128
    assert readable_json(joined.text) == {"a": {"v": _deep(126)}}
