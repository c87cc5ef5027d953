"""A workflow step of a shell agent (the built-in `shell` agent or any agent of kind
`shell`, whatever its command) never has a value pasted into its inputs: each input holds
literal text or exactly one whole reference, and a reference inside text is refused at
registration (CLI and HTTP API); a registry row holding one fails its ticket at run time.
The safe pattern, the value as an input of its own read as "$INPUT_<KEY>", runs it as
text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent, write_workflow
from tests.support.api import start_api
from tests.support.cli import query, snapshot, sqlite_shell, swarm, swarm_inproc

NAME = "x'; echo NAME-INJECTED; id; echo '"
TITLE = "x; echo TITLE-INJECTED"
FIRST = """
    name: greet
    version: 1.0.0
    steps:
      - id: first
        agent: echo
        inputs: {name: "${inputs.name}"}
"""
HOSTILE_STEP = """
      - id: say
        agent: shell
        inputs: {command: "echo Hello '${steps.first.outputs.name}', from ${ticket.title}"}
"""
FIX = (
    "pass each value as an input of its own (name: ${steps.first.outputs.name}) and combine "
    'them in the agent\'s command or script ("$INPUT_NAME", $SWARM_INPUTS)'
)


def line_for(source: str, agent: str = "shell@1.0.0", key: str = "command") -> str:
    return (
        f"{source}: step 'say': inputs.{key}: ${{steps.first.outputs.name}} stands inside "
        f"text in an input of shell agent {agent} (a shell step's input is literal text or "
        f"exactly one whole reference: a value pasted into text could run as code); {FIX}"
    )


WHOLE_STEP = """
      - id: say
        agent: whole
        inputs: {command: "echo ${steps.first.outputs.name}"}
"""


@pytest.mark.parametrize(
    ("agent_yaml", "step"),
    [
        (None, HOSTILE_STEP),
        ('name: whole\nkind: shell\ncommand: "${inputs.command}"\n', WHOLE_STEP),
        ("name: whole\nkind: shell\ncommand: sh -c ${inputs.command}\n", WHOLE_STEP),
        ("name: whole\nkind: shell\ncommand: echo ${inputs.command}\n", WHOLE_STEP),
    ],
    ids=["builtin-shell", "whole-reference", "sh-c", "echo"],
)
def test_a_reference_inside_a_shell_step_input_is_refused_at_registration(
    home: Path, tmp_path: Path, agent_yaml: str | None, step: str
) -> None:
    if agent_yaml is not None:
        swarm_inproc(home, "agent", "register", str(write_agent(tmp_path / "a", agent_yaml)))
    folder = write_workflow(tmp_path / "w", FIRST + step)
    before = snapshot(home / "registry.db")
    done = swarm_inproc(home, "workflow", "register", str(folder))
    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    source = str(folder / "workflow.yaml")
    agent = "shell@1.0.0" if agent_yaml is None else "whole@1.0.0"
    assert done.stderr == f"error: {line_for(source, agent)}\n"
    assert snapshot(home / "registry.db") == before


# A tester's commands that ran an embedded ticket title as code past the old scan of the
# agent's command for interpreters, and commands that scan refused by mistake: now every
# one is refused when a reference stands inside text, and registers with a whole one. (A
# value piped into a shell, `| sh`, `| xargs sh -c`, or into `| tclsh`, no longer
# registers: the code check follows pipes; tests/unit/test_script_inputs.py keeps those forms for the step rule.)
COMMANDS = [
    "sh -c -- ${inputs.x}",
    "rbash -c ${inputs.x}",
    '"$(command -v sh)" -c ${inputs.x}',
    "node -p ${inputs.x}",
    "env -S ${inputs.x}",
    'printf "%s\\n" ${inputs.x} > s.sh; sh s.sh',
    'sh -c "$1" _ ${inputs.x}',
    "S=sh; $S -c ${inputs.x}",
    "echo ${inputs.x} | . /dev/stdin",
    "sh -o errexit -c ${inputs.x}",
    "python3 tool.py -c ${inputs.x}",
    "node app.js -e ${inputs.x}",
    "git commit -m ${inputs.x}",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_no_agent_command_lets_a_shell_step_embed_a_reference(
    home: Path, tmp_path: Path, command: str
) -> None:
    agent_yaml = f"name: say\nkind: shell\ncommand: {json.dumps(command)}\n"
    done = swarm_inproc(home, "agent", "register", str(write_agent(tmp_path / "a", agent_yaml)))
    assert done.returncode == 0, done.stderr
    embedded = "\n      - id: say\n        agent: say\n"
    embedded += "        inputs: {x: 'echo hello ${steps.first.outputs.name}'}\n"
    folder = write_workflow(tmp_path / "w", FIRST + embedded)
    done = swarm_inproc(home, "workflow", "register", str(folder))
    assert done.returncode == 5, done.stdout + done.stderr
    source = str(folder / "workflow.yaml")
    assert done.stderr == f"error: {line_for(source, 'say@1.0.0', 'x')}\n"
    whole = embedded.replace("'echo hello ${steps", "'${steps")
    folder = write_workflow(tmp_path / "w2", FIRST + whole)
    done = swarm_inproc(home, "workflow", "register", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_nested_string_is_checked_and_other_kinds_keep_embedded_references(
    home: Path, tmp_path: Path
) -> None:
    nested = "\n      - id: say\n        agent: shell\n"
    nested += (
        "        inputs: {command: 'true', opts: {list: [ok, 'a ${steps.first.outputs.name}']}}\n"
    )
    folder = write_workflow(tmp_path / "w", FIRST + nested)
    done = swarm_inproc(home, "workflow", "register", str(folder))
    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stderr.startswith(
        f"error: {folder / 'workflow.yaml'}: step 'say': inputs.opts.list.1: "
        "${steps.first.outputs.name} stands inside text in an input of shell agent shell@1.0.0"
    )
    echo = "\n      - id: say\n        agent: echo\n"
    echo += "        inputs: {greeting: 'Hello ${steps.first.outputs.name}, ${ticket.title}'}\n"
    folder = write_workflow(tmp_path / "w2", FIRST + echo)
    done = swarm_inproc(home, "workflow", "register", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr


def test_literal_text_and_one_whole_reference_register(home: Path, tmp_path: Path) -> None:
    steps = """
      - id: literal
        agent: shell
        inputs: {command: "echo '$${HOME}' literal"}
      - id: whole
        agent: shell
        inputs: {command: 'sh -c "$INPUT_SCRIPT"', script: "${steps.first.outputs.script}"}
    """
    folder = write_workflow(tmp_path / "w", FIRST + steps)
    done = swarm_inproc(home, "workflow", "register", str(folder))
    assert done.returncode == 0, done.stderr


# The tester's workflow: an echo step builds a script around the title, and the built-in
# shell agent ran it (`inputs.command` a whole reference to it).
FMT = """
    name: fmt
    version: 1.0.0
    steps:
      - id: fmt
        agent: echo
        inputs: {script: "echo Hello ${ticket.title}"}
      - id: say
        agent: shell
        inputs: {command: "${steps.fmt.outputs.script}"}
"""
FMT_SPEC = {
    "name": "fmt",
    "version": "1.0.0",
    "steps": [
        {"id": "fmt", "agent": "echo", "inputs": {"script": "echo Hello ${ticket.title}"}},
        {"id": "say", "agent": "shell", "inputs": {"command": "${steps.fmt.outputs.script}"}},
    ],
}


def script_line(source: str) -> str:
    return (
        f"{source}: step 'say': inputs.command: ${{steps.fmt.outputs.script}} would run as "
        "code: shell agent shell@1.0.0 runs inputs.command as its script, so a workflow step "
        "gives it literal text only; pass the value as an input of its own (script: "
        '${steps.fmt.outputs.script}) and read it in a literal script ("$INPUT_SCRIPT", '
        "$SWARM_INPUTS), or run it as a script on purpose, in words: command: "
        "'sh -c \"$INPUT_SCRIPT\"'"
    )


def test_a_whole_reference_as_the_shell_agent_s_command_is_refused(
    home: Path, tmp_path: Path
) -> None:
    """CLI (exit 5) and HTTP API (422), nothing written."""
    folder = write_workflow(tmp_path / "w", FMT)
    before = snapshot(home / "registry.db")
    done = swarm(home, "workflow", "register", str(folder))
    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stderr == f"error: {script_line(str(folder / 'workflow.yaml'))}\n"
    api = start_api(home, token="t0ken-script-command")
    try:
        got = api.post("/v1/workflows", json=FMT_SPEC)
        assert got.status_code == 422, got.text
        assert got.json()["message"] == script_line("workflow")
    finally:
        api.stop()
    assert snapshot(home / "registry.db") == before


def test_a_hand_written_row_running_a_value_fails_its_ticket(home: Path) -> None:
    """The same workflow written with sqlite3: its ticket fails before any step runs; the
    title is never run."""
    quoted = json.dumps(FMT_SPEC).replace("'", "''")
    sqlite_shell(
        home / "registry.db",
        f"INSERT INTO workflows (name, version, spec) VALUES ('fmt', '1.0.0', '{quoted}')",
    )
    swarm(home, "ticket", "create", "--title", "x; echo INJECTED; id", "--workflow", "fmt",
          check=True)  # fmt: skip
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    ticket = json.loads(swarm(home, "ticket", "show", "1", "--json", check=True).stdout)
    assert ticket["status"] == "failed"
    assert script_line("workflow fmt@1.0.0 in the registry") in ticket["error"]
    steps = query(home / "tickets.db", "SELECT step_id, outputs FROM step_executions")
    assert "uid=" not in json.dumps(steps) and "say" not in {s["step_id"] for s in steps}


def test_the_http_api_refuses_it_alike(home: Path) -> None:
    api = start_api(home, token="t0ken-script-inputs")
    try:
        body = {
            "name": "greet",
            "steps": [
                {"id": "first", "agent": "echo", "inputs": {"name": "${inputs.name}"}},
                {"id": "say", "agent": "shell", "inputs": {"command": "echo Hello "
                                                           "'${steps.first.outputs.name}'"}},
            ],
        }  # fmt: skip
        got = api.post("/v1/workflows", json=body)
        assert got.status_code == 422, got.text
        assert got.json()["message"] == line_for("workflow")
        assert api.get("/v1/workflows/greet").status_code == 404
    finally:
        api.stop()


def test_a_hand_written_row_fails_only_its_ticket(home: Path, tmp_path: Path) -> None:
    """The registry is a public interface: a row written with sqlite3 past registration
    fails its ticket, before any step runs, with the registration's line; another
    ticket runs."""
    spec = {
        "name": "greet",
        "version": "1.0.0",
        "steps": [
            {"id": "first", "agent": "echo", "inputs": {"name": "${inputs.name}"}},
            {"id": "say", "agent": "shell", "inputs": {"command": "echo Hello "
             "'${steps.first.outputs.name}', from ${ticket.title}"}},
        ],
    }  # fmt: skip
    quoted = json.dumps(spec).replace("'", "''")
    sqlite_shell(
        home / "registry.db",
        f"INSERT INTO workflows (name, version, spec) VALUES ('greet', '1.0.0', '{quoted}')",
    )
    swarm(home, "ticket", "create", "--title", TITLE, "--workflow", "greet", "--input",
          f"name={NAME}", check=True)  # fmt: skip
    swarm(home, "ticket", "create", "--title", "ok", "--agent", "echo", check=True)
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    bad = json.loads(swarm(home, "ticket", "show", "1", "--json", check=True).stdout)
    assert bad["status"] == "failed"
    assert line_for("workflow greet@1.0.0 in the registry") in bad["error"]
    ok = json.loads(swarm(home, "ticket", "show", "2", "--json", check=True).stdout)
    assert ok["status"] == "done", ok
    steps = query(home / "tickets.db", "SELECT step_id, outputs FROM step_executions")
    assert "INJECTED" not in json.dumps(steps) and "say" not in {s["step_id"] for s in steps}


def test_an_agent_that_comes_to_be_a_shell_agent_fails_the_ticket(
    home: Path, tmp_path: Path
) -> None:
    """A step names `runner` (the latest version): registered when it was an `echo` agent,
    it fails once the latest `runner` is a shell agent."""
    safe = "name: runner\nversion: 1.0.0\nkind: echo\n"
    swarm_inproc(home, "agent", "register", str(write_agent(tmp_path / "r1", safe)))
    step = "\n      - id: say\n        agent: runner\n"
    step += "        inputs: {script: 'echo ${steps.first.outputs.name}'}\n"
    folder = write_workflow(tmp_path / "w", FIRST + step)
    assert swarm_inproc(home, "workflow", "register", str(folder)).returncode == 0
    whole = 'name: runner\nversion: 2.0.0\nkind: shell\ncommand: "${inputs.script}"\n'
    swarm_inproc(home, "agent", "register", str(write_agent(tmp_path / "r2", whole)))
    swarm(home, "ticket", "create", "--title", "t", "--workflow", "greet", "--input",
          f"name={NAME}", check=True)  # fmt: skip
    done = swarm(home, "start", "--foreground", "--until-idle")
    assert done.returncode == 0, done.stdout + done.stderr
    ticket = json.loads(swarm(home, "ticket", "show", "1", "--json", check=True).stdout)
    assert ticket["status"] == "failed"
    assert (
        "workflow greet@1.0.0 in the registry: step 'say': inputs.script: "
        "${steps.first.outputs.name} stands inside text in an input of shell agent "
        "runner@2.0.0 (a shell step's input is literal text or exactly one whole reference: "
        "a value pasted into text could run as code); " + FIX
    ) in ticket["error"]


def test_the_safe_pattern_prints_a_hostile_value_literally(home: Path, tmp_path: Path) -> None:
    step = """
      - id: say
        agent: shell
        inputs:
          command: 'echo Hello "$INPUT_NAME", from "$INPUT_TITLE"'
          name: ${steps.first.outputs.name}
          title: ${ticket.title}
    """
    folder = write_workflow(tmp_path / "w", FIRST + step)
    swarm_inproc(home, "workflow", "register", str(folder)).check_returncode()
    swarm(home, "ticket", "create", "--title", TITLE, "--workflow", "greet", "--input",
          f"name={NAME}", check=True)  # fmt: skip
    done = swarm(home, "run-ticket", "1", "--wait", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    say = json.loads(done.stdout)["result"]["say"]
    assert say["stdout"] == f"Hello {NAME}, from {TITLE}\n"
    assert "uid=" not in say["stdout"] and say["stderr"] == ""
