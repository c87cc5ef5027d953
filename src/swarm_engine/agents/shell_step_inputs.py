"""What a workflow step may give a shell agent: literal text or one whole reference, and
literal text only as the script the agent runs.

A value substituted into an agent's `command` never becomes shell code
(`agents.shell_command`: each reference is quoted as one word), but a workflow step is a
template whose inputs are rendered as plain text: a reference embedded in other text
(`echo Hello ${ticket.title}`) pastes the value (a ticket's title, an LLM's output) into
that text, and what a shell agent does with the text is beyond telling: it may run it as
code (`sh -c`, `eval`, a pipe into a shell, a file it writes and runs, ...). So the rule
fails closed: every string in every input of a step whose agent is of kind `shell` is
literal text or exactly one whole reference (the value passes whole, as data).

One input is more than data: the agent's **script input**, the one it runs as its whole
script. The built-in `shell` agent (any agent of kind `shell` without a `command:`) runs
`inputs.command`; an agent whose `command:` is exactly one reference (`${inputs.script}`)
runs that input. A whole reference there would run a value (a title, another step's
output) as code, so a step gives its script input literal text only, no reference at all.
Running a value as a script on purpose is then written where it shows, in literal text
(`command: 'sh -c "$INPUT_SCRIPT"'`, the value an input of its own), or in an agent's own
command (`command: sh -c ${inputs.script}`). Other kinds (echo, claude, claude-code) take
their inputs as data and keep embedded references.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from swarm_engine.agents.shell_command import whole_reference
from swarm_engine.templating import Ref, parse, references, strings

if TYPE_CHECKING:
    from swarm_engine.models import AgentSpec


def script_input(agent: AgentSpec) -> str | None:
    """The input `agent` runs as its whole script, or None: `command` for a shell agent
    without a command of its own (the built-in `shell`), `<key>` for one whose command is
    exactly `${inputs.<key>...}`."""
    if agent.kind != "shell":
        return None
    if agent.command is None:
        return "command"
    whole = whole_reference(agent.command) if isinstance(agent.command, str) else None
    if whole is None or not whole.startswith("inputs."):
        return None
    return whole.split(".")[1]


def shell_step_problem(inputs: dict[str, Any], agent: AgentSpec) -> str | None:
    """Why a workflow step's `inputs` (a template) may not go to `agent`, as
    `inputs.<key>[.<n>...]: <problem>; <fix>`, or None: the agent is of kind `shell` and
    a string in an input (nested lists and mappings included) holds a reference inside
    other text, or its script input (`script_input`) holds any reference."""
    if agent.kind != "shell":
        return None
    for where, text in strings(inputs, "inputs"):
        parts = parse(text)
        paths = [p.path for p in parts if isinstance(p, Ref)]
        if not paths or len(parts) == 1:  # literal, or one whole reference: as `render`
            continue
        name = _input_name(paths[0], set(inputs))
        return (
            f"{where}: ${{{paths[0]}}} stands inside text in an input of shell agent "
            f"{agent.ref} (a shell step's input is literal text or exactly one whole "
            "reference: a value pasted into text could run as code); pass each value as an "
            f"input of its own ({name}: ${{{paths[0]}}}) and combine them in the agent's "
            f'command or script ("$INPUT_{name.upper()}", $SWARM_INPUTS)'
        )
    key = script_input(agent)
    if key is None or key not in inputs:
        return None
    for where, text in strings(inputs[key], f"inputs.{key}"):
        path = next(references(text), None)
        if path is None:
            continue
        name = _input_name(path, set(inputs))
        return (
            f"{where}: ${{{path}}} would run as code: shell agent {agent.ref} runs "
            f"inputs.{key} as its script, so a workflow step gives it literal text only; "
            f"pass the value as an input of its own ({name}: ${{{path}}}) and read it in "
            f'a literal script ("$INPUT_{name.upper()}", $SWARM_INPUTS), or run it as a '
            f"script on purpose, in words: {key}: 'sh -c \"$INPUT_{name.upper()}\"'"
        )
    return None


def _input_name(path: str, taken: set[str]) -> str:
    """A name for an input of its own holding reference `path`: its last part when that
    is an identifier no input of the step has, else `value` (or `value_2`, ...)."""
    last = path.rsplit(".", 1)[-1]
    if last.isidentifier() and last not in taken:
        return last
    name, n = "value", 1
    while name in taken:
        n += 1
        name = f"value_{n}"
    return name
