"""Which inputs a shell agent runs as code (`agents.script_inputs`), and the rule for a
workflow step feeding one: literal text or one whole reference, never a reference inside
text."""

from __future__ import annotations

from typing import Any

import pytest

from swarm_engine.agents.script_inputs import script_inputs, step_script_problem
from swarm_engine.models import AgentSpec


def agent(command: Any, kind: str = "shell") -> AgentSpec:
    return AgentSpec(name="a", version="1.0.0", kind=kind, command=command)


@pytest.mark.parametrize(
    ("command", "keys"),
    [
        (None, ["command"]),
        ("${inputs.cmd}", ["cmd"]),
        (" ${inputs.cmd}\n", ["cmd"]),
        ("sh -c ${inputs.script}", ["script"]),
        ('bash -ec "set -x; ${inputs.s}" name ${inputs.arg}', ["s"]),
        ("echo hi; /bin/sh -c '${inputs.s}'", ["s"]),
        ("x=$(env A=1 dash -c ${inputs.s})", ["s"]),
        ('eval "${inputs.e}"', ["e"]),
        ("python3 -c ${inputs.p} ${inputs.q}", ["p"]),
        ("node -e ${inputs.j}", ["j"]),
        ("echo ${inputs.a} | sh", ["a"]),
        (["sh", "-c", "${inputs.s}"], ["s"]),
        (["bash", "-o", "pipefail", "-c", "${inputs.s}", "${inputs.arg}"], ["s"]),
        ("echo ${inputs.x}", []),
        ("echo ${inputs.a} | grep x", []),
        ("sh ${inputs.file}", []),
        ("# sh -c ${inputs.c}\necho ${inputs.c}", []),
        (["sh", "-c", "x", "${inputs.a}"], []),
        (["printf", "%s", "${inputs.x}"], []),
        ("sh -c ${ticket.title}", []),  # the author's own choice, not a step input
    ],
)
def test_the_inputs_a_shell_agent_runs_as_code(command: Any, keys: list[str]) -> None:
    assert sorted(script_inputs(agent(command))) == keys


def test_kinds_that_run_no_command_run_no_input() -> None:
    assert script_inputs(agent(None, kind="echo")) == {}


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ("echo hello", False),
        ("echo $${HOME}", False),
        ("${steps.first.outputs.script}", False),
        (" ${steps.first.outputs.script}", True),
        ("echo ${ticket.title}", True),
        ("echo '${inputs.name}'", True),
        (["echo", "${inputs.name}"], False),
        (["echo ${inputs.name}"], True),
    ],
)
def test_a_script_input_holds_literal_text_or_one_whole_reference(
    value: Any, refused: bool
) -> None:
    problem = step_script_problem({"command": value, "other": "a ${ticket.title}"}, agent(None))
    assert (problem is not None) == refused
    if problem is not None:
        assert problem.startswith("inputs.command")
        assert "pass the value as an input of its own" in problem


def test_other_inputs_may_embed_references() -> None:
    assert step_script_problem({"name": "Hello ${ticket.title}"}, agent(None)) is None
    assert step_script_problem({"command": "echo ${ticket.title}"}, agent("true")) is None
