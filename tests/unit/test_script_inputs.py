"""The rule for a workflow step of a shell agent (`agents.shell_step_inputs`): every string
in every input is literal text or exactly one whole reference, never a reference inside
text, whatever the agent's command does with it; other kinds keep embedded references."""

from __future__ import annotations

from typing import Any

import pytest

from swarm_engine.agents.shell_step_inputs import shell_step_problem
from swarm_engine.models import AgentSpec


def agent(command: Any, kind: str = "shell") -> AgentSpec:
    return AgentSpec(name="a", version="1.0.0", kind=kind, command=command)


# Commands a tester used to run an embedded ticket title as code past the old interpreter
# scan, and commands it refused by mistake: the rule no longer reads the command.
COMMANDS = [
    None,  # the built-in `shell` agent: runs inputs.command
    "${inputs.x}",
    "sh -c ${inputs.x}",
    "sh -c -- ${inputs.x}",
    "echo ${inputs.x} | tee /dev/null | sh",
    'printf "%s\\n" ${inputs.x} | cat | bash',
    "bash <<< ${inputs.x}",
    "rbash -c ${inputs.x}",
    '"$(command -v sh)" -c ${inputs.x}',
    "node -p ${inputs.x}",
    "env -S ${inputs.x}",
    'printf "%s" ${inputs.x} | xargs -0 sh -c',
    "sh -c ${inputs}",
    'printf "%s\\n" ${inputs.x} > s.sh; sh s.sh',
    'sh -c "$1" _ ${inputs.x}',
    "echo ${inputs.x} | tclsh",
    "busybox ash -c ${inputs.x}",
    "S=sh; $S -c ${inputs.x}",
    "echo ${inputs.x} | . /dev/stdin",
    "sh -o errexit -c ${inputs.x}",
    "python3 tool.py -c ${inputs.x}",
    "bash build.sh -c ${inputs.x}",
    "node app.js -e ${inputs.x}",
    "grep -c ${inputs.x} data.txt; sh post.sh",
    "echo ${inputs.x} | tee log.txt",
    "git commit -m ${inputs.x}",
    "echo ${inputs.x}",
    ["sh", "-c", "${inputs.x}"],
    ["printf", "%s", "${inputs.x}"],
]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_reference_inside_text_is_refused_whatever_the_command(command: Any) -> None:
    problem = shell_step_problem({"x": "echo hello ${ticket.title}"}, agent(command))
    assert problem is not None
    assert problem.startswith(
        "inputs.x: ${ticket.title} stands inside text in an input of shell agent a@1.0.0 "
    )
    assert problem.endswith(
        "pass each value as an input of its own (title: ${ticket.title}) and combine them "
        'in the agent\'s command or script ("$INPUT_TITLE", $SWARM_INPUTS)'
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_literal_text_and_one_whole_reference_pass_whatever_the_command(command: Any) -> None:
    inputs = {"x": "${ticket.title}", "y": "echo $${HOME} literal", "n": 3, "z": None}
    assert shell_step_problem(inputs, agent(command)) is None


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ("echo hello", None),
        ("echo $${HOME}", None),
        ("${steps.first.outputs.script}", None),
        (" ${steps.first.outputs.script}", "inputs.command"),
        ("${ticket.id}${ticket.title}", "inputs.command"),
        ("echo '${inputs.name}'", "inputs.command"),
        (["echo", "${inputs.name}"], None),
        (["echo ${inputs.name}"], "inputs.command.0"),
        ({"a": {"b": ["ok", "x-${ticket.id}"]}}, "inputs.command.a.b.1"),
        ({"a": "${ticket.id}", "${k}": "literal"}, None),  # keys are never rendered
    ],
)
def test_every_string_of_a_shell_step_input_is_checked(value: Any, where: str | None) -> None:
    problem = shell_step_problem({"command": value}, agent(None))
    assert (problem.split(":")[0] if problem else None) == where


@pytest.mark.parametrize("kind", ["echo", "claude", "claude-code"])
def test_other_kinds_keep_embedded_references(kind: str) -> None:
    assert shell_step_problem({"name": "Hello ${ticket.title}"}, agent(None, kind=kind)) is None


def test_the_suggested_name_is_free() -> None:
    problem = shell_step_problem({"title": "a ${ticket.title}"}, agent(None))
    assert problem is not None and "(value: ${ticket.title})" in problem
    problem = shell_step_problem({"title": "a ${ticket.title}", "value": 1}, agent(None))
    assert problem is not None and "(value_2: ${ticket.title})" in problem
    assert '"$INPUT_VALUE_2"' in problem
