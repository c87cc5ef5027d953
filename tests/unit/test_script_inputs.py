"""The rule for a workflow step of a shell agent (`agents.shell_step_inputs`): every string
in every input is literal text or exactly one whole reference, never a reference inside
text, whatever the agent's command does with it; the input the agent runs as its script
(`inputs.command` of the built-in `shell` agent, `x` of `command: ${inputs.x}`) holds no
reference at all; other kinds keep embedded references."""

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


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "${inputs.x}"])
def test_literal_text_and_one_whole_reference_pass_whatever_the_command(command: Any) -> None:
    inputs = {"x": "${ticket.title}", "y": "echo $${HOME} literal", "n": 3, "z": None}
    assert shell_step_problem(inputs, agent(command)) is None


@pytest.mark.parametrize(
    ("command", "key"),
    [
        (None, "command"),  # the built-in `shell` agent, or any without a command
        ("${inputs.x}", "x"),
        (" ${inputs.x} ", "x"),
        ("${inputs.x.script}", "x"),
    ],
)
def test_the_script_input_takes_literal_text_only(command: Any, key: str) -> None:
    """A whole reference in the input an agent runs as its script would run a value (a
    title, an LLM's output) as code: refused, with how to do it in words."""
    problem = shell_step_problem({key: "${steps.fmt.outputs.script}"}, agent(command))
    assert problem == (
        f"inputs.{key}: ${{steps.fmt.outputs.script}} would run as code: shell agent "
        f"a@1.0.0 runs inputs.{key} as its script, so a workflow step gives it literal text "
        "only; pass the value as an input of its own (script: ${steps.fmt.outputs.script}) "
        'and read it in a literal script ("$INPUT_SCRIPT", $SWARM_INPUTS), or run it as a '
        f"script on purpose, in words: {key}: 'sh -c \"$INPUT_SCRIPT\"'"
    )
    literal = {key: 'sh -c "$INPUT_SCRIPT"', "script": "${steps.fmt.outputs.script}"}
    assert shell_step_problem(literal, agent(command)) is None


@pytest.mark.parametrize(
    "command", ["${ticket.description}", "sh -c ${inputs.x}", "${inputs.x}; true", ["${inputs.x}"]]
)
def test_an_agent_s_own_command_leaves_whole_references_as_data(command: Any) -> None:
    assert shell_step_problem({"x": "${steps.fmt.outputs.script}"}, agent(command)) is None


@pytest.mark.parametrize(
    ("value", "as_script", "as_data"),
    [
        ("echo hello", None, None),
        ("echo $${HOME}", None, None),
        ("${steps.first.outputs.script}", "inputs.command", None),
        (" ${steps.first.outputs.script}", "inputs.command", "inputs.data"),
        ("${ticket.id}${ticket.title}", "inputs.command", "inputs.data"),
        ("echo '${inputs.name}'", "inputs.command", "inputs.data"),
        (["echo", "${inputs.name}"], "inputs.command.1", None),
        (["echo ${inputs.name}"], "inputs.command.0", "inputs.data.0"),
        ({"a": {"b": ["ok", "x-${ticket.id}"]}}, "inputs.command.a.b.1", "inputs.data.a.b.1"),
        ({"a": "${ticket.id}", "${k}": "literal"}, "inputs.command.a", None),
        ({"a": "literal", "${k}": "literal"}, None, None),  # keys are never rendered
    ],
)
def test_every_string_of_a_shell_step_input_is_checked(
    value: Any, as_script: str | None, as_data: str | None
) -> None:
    """`command` is the built-in shell agent's script: no reference at all; any other
    input: literal text or one whole reference."""
    problem = shell_step_problem({"command": value}, agent(None))
    assert (problem.split(":")[0] if problem else None) == as_script
    problem = shell_step_problem({"command": "true", "data": value}, agent(None))
    assert (problem.split(":")[0] if problem else None) == as_data


@pytest.mark.parametrize("kind", ["echo", "claude", "claude-code"])
def test_other_kinds_keep_embedded_references(kind: str) -> None:
    assert shell_step_problem({"name": "Hello ${ticket.title}"}, agent(None, kind=kind)) is None


def test_the_suggested_name_is_free() -> None:
    problem = shell_step_problem({"title": "a ${ticket.title}"}, agent(None))
    assert problem is not None and "(value: ${ticket.title})" in problem
    problem = shell_step_problem({"title": "a ${ticket.title}", "value": 1}, agent(None))
    assert problem is not None and "(value_2: ${ticket.title})" in problem
    assert '"$INPUT_VALUE_2"' in problem
