"""Templates live only in definitions: the `$${` escape, no re-scanning of substituted data,
malformed references refused, and the limits on how inputs reach a command."""

from __future__ import annotations

import re

import pytest

from swarm_engine.agents.files import (
    INPUT_ENV_MAX_BYTES,
    INPUT_ENV_MAX_VARS,
    INPUT_ENV_TOTAL_BYTES,
    MAX_ARG_BYTES,
    colliding_input_keys,
    input_env,
)
from swarm_engine.agents.shell import check_exec_size
from swarm_engine.engine.plan import TICKET_INPUTS
from swarm_engine.errors import AgentError
from swarm_engine.templating import (
    TemplateError,
    check_template,
    references,
    render,
    step_dependencies,
)

HOSTILE = {
    "snippet": "const s = `hi ${name}`;",
    "title": "${ticket.title}",
    "escape": "$${inputs.x} and $${",
    "unclosed": "${",
    "nested": {"list": ["${steps.a.outputs.x}", "$$${inputs.y}"]},
}
CTX = {
    "ticket": {"id": 7, "title": "Fix it", "description": None, "priority": 0},
    "inputs": HOSTILE,
    "variables": {"v": "${variables.v}"},
    "steps": {"a": {"outputs": {"x": "${inputs.snippet}"}}},
}


def test_a_single_agent_step_gets_the_ticket_inputs_as_they_are() -> None:
    assert render(TICKET_INPUTS, CTX) == HOSTILE


def test_the_escape_writes_a_literal_dollar_brace() -> None:
    assert render("echo $${HOME} $${inputs.snippet}", CTX) == "echo ${HOME} ${inputs.snippet}"
    assert render("$$${ticket.id}", CTX) == "$${ticket.id}"  # a `$`, then the escape
    assert list(references("$${inputs.a} ${inputs.b}")) == ["inputs.b"]
    assert step_dependencies({"x": "$${steps.a.outputs.x}"}) == set()


def test_substituted_values_are_never_scanned_again() -> None:
    out = render("a=${inputs.title} b=${inputs.escape} c=${steps.a.outputs.x}", CTX)
    assert out == "a=${ticket.title} b=$${inputs.x} and $${ c=${inputs.snippet}"
    assert render("${variables.v}", CTX) == "${variables.v}"
    assert render({"k": ["${inputs.nested}"]}, CTX) == {"k": [HOSTILE["nested"]]}


def test_interpolated_non_strings_are_json() -> None:
    assert render("#${ticket.id} ${ticket.description} ${inputs.nested}", CTX) == (
        '#7 null {"list": ["${steps.a.outputs.x}", "$$${inputs.y}"]}'
    )


@pytest.mark.parametrize("text", ["${", "x ${HOME:-2}", "${ inputs.a b }", "${inputs.a"])
def test_a_malformed_reference_is_refused_and_names_the_escape(text: str) -> None:
    problem = check_template({"k": [text]}, where="inputs")
    assert problem is not None and problem[0] == "inputs.k.0"
    assert re.fullmatch(
        r"malformed reference '.+' \(.*for a literal '\$\{' write '\$\$\{'\)", problem[1]
    )
    # only a definition stored by an older version can hold one: it runs as it used to
    assert render(text, CTX) == text


def test_a_reference_that_does_not_resolve_is_an_error_at_run_time() -> None:
    with pytest.raises(TemplateError, match=r"\$\{inputs.nope\} does not resolve \(no 'nope'\)"):
        render("x ${inputs.nope}", CTX)


@pytest.mark.parametrize(
    ("value", "namespaces", "message"),
    [
        ("${HOME}", ("inputs", "ticket"), "unknown namespace in ${HOME}"),
        ("${steps.a.outputs.x}", ("inputs", "ticket"), "unknown namespace"),
        ("${ticket.owner}", ("inputs", "ticket"), "a ticket has only ${ticket.id|title"),
        ("${ticket.title.x}", ("inputs", "ticket"), "a ticket has only"),
        ("${inputs}", ("inputs", "ticket"), "needs a field"),
        ("${inputs..x}", ("inputs", "ticket"), "needs a field"),
        ("${steps.a.x}", ("steps",), "must look like ${steps.<id>.outputs.<key>}"),
    ],
)
def test_check_template_names_the_problem(
    value: str, namespaces: tuple[str, ...], message: str
) -> None:
    problem = check_template(value, namespaces, where="command")
    assert problem is not None
    assert problem[0] == "command" and message in problem[1]


def test_check_template_accepts_good_definitions() -> None:
    value = {"a": "${ticket.title}: ${inputs.x.0} $${HOME} ${variables.v}", "n": 3}
    assert check_template(value, where="inputs") is None
    assert check_template("${ steps.s-1.outputs.k }", where="outputs") is None


def test_small_scalars_become_env_vars_large_ones_only_the_file() -> None:
    small = "x" * INPUT_ENV_MAX_BYTES
    env = input_env(
        {
            "small": small,
            "big": small + "x",
            "n": 3,
            "flag": True,
            "obj": {"a": 1},
            "not-an-identifier": "v",
            "nul": "a\0b",
            "surrogate": "\ud800",
        }
    )
    assert env == {"INPUT_SMALL": small, "INPUT_N": "3", "INPUT_FLAG": "True"}


def test_input_env_vars_stay_within_their_total() -> None:
    value = "y" * INPUT_ENV_MAX_BYTES
    inputs = {f"k{i:03d}": value for i in range(2 * INPUT_ENV_TOTAL_BYTES // INPUT_ENV_MAX_BYTES)}
    env = input_env(inputs)
    assert sum(len(v) for v in env.values()) <= INPUT_ENV_TOTAL_BYTES
    assert sorted(env) == [f"INPUT_K{i:03d}" for i in range(len(env))]  # sorted key order
    assert len(env) == INPUT_ENV_TOTAL_BYTES // INPUT_ENV_MAX_BYTES


def test_input_env_vars_are_at_most_so_many() -> None:
    inputs = {f"k{i:05d}": "v" for i in range(INPUT_ENV_MAX_VARS + 5)}
    env = input_env(inputs)
    assert sorted(env) == [f"INPUT_K{i:05d}" for i in range(INPUT_ENV_MAX_VARS)]


def test_inputs_whose_env_names_collide_are_only_in_the_file() -> None:
    """`a` and `A` (or `ß` and `SS`: `upper` makes one name of both) would both be
    `$INPUT_A`, one silently standing for the other: neither is exported, whatever its
    value, and the other inputs are as before."""
    inputs = {"A": "1", "a": "2", "ß": "3", "SS": {"x": 1}, "b": "4", "not-id": "5"}
    assert colliding_input_keys(inputs) == ["A", "SS", "a", "ß"]
    assert input_env(inputs) == {"INPUT_B": "4"}
    assert input_env({"a": "2"}) == {"INPUT_A": "2"}


def test_a_command_over_the_kernel_limit_is_refused_before_exec() -> None:
    check_exec_size("the command", "x" * MAX_ARG_BYTES)
    with pytest.raises(AgentError) as err:
        check_exec_size("the command after substitution", "é" * (MAX_ARG_BYTES // 2 + 1))
    message = str(err.value)
    assert "\n" not in message
    assert f"is {MAX_ARG_BYTES + 1} bytes, over the kernel's limit of 128 KiB" in message
    assert "read large inputs from the inputs file ($SWARM_INPUTS)" in message
    with pytest.raises(AgentError, match="contains a NUL character"):
        check_exec_size("the command", "echo a\0b")
