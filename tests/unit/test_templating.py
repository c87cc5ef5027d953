import pytest

from swarm_engine.templating import TemplateError, render, step_dependencies

CTX = {
    "ticket": {"id": 7, "title": "Fix it", "description": "the bug"},
    "inputs": {"n": 3, "nested": {"k": [10, 20]}},
    "variables": {"lang": "en"},
    "steps": {"a": {"outputs": {"words": 5, "list": [1, 2]}}},
}


def test_whole_reference_keeps_its_type() -> None:
    assert render("${steps.a.outputs.words}", CTX) == 5
    assert render("${steps.a.outputs.list}", CTX) == [1, 2]
    assert render("${inputs.nested.k.1}", CTX) == 20


def test_interpolation_inside_text() -> None:
    assert render("#${ticket.id}: ${ticket.title} (${variables.lang})", CTX) == "#7: Fix it (en)"
    assert render("list=${steps.a.outputs.list}", CTX) == "list=[1, 2]"


def test_nested_structures_are_rendered() -> None:
    out = render({"x": ["${inputs.n}", {"y": "${ticket.description}"}]}, CTX)
    assert out == {"x": [3, {"y": "the bug"}]}


def test_missing_reference_is_a_clear_error() -> None:
    with pytest.raises(TemplateError, match=r"steps.b.outputs.x.*no 'b'"):
        render("${steps.b.outputs.x}", CTX)


@pytest.mark.parametrize("index", ["9" * 5000, "9" * 19, "2", "-1"])
def test_an_index_past_the_list_is_a_clear_error(index: str) -> None:
    with pytest.raises(TemplateError, match="does not resolve"):
        render(f"${{steps.a.outputs.list.{index}}}", CTX)


def test_step_references_imply_dependencies() -> None:
    value = {"a": "${steps.one.outputs.x}", "b": ["${steps.two.outputs.y} ${inputs.z}"]}
    assert step_dependencies(value) == {"one", "two"}
