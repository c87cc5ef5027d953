"""A workflow step input that its agent runs as a script (the built-in `shell` agent's
`inputs.command`, an agent's `command: ${inputs.cmd}` or `sh -c ${inputs.script}`) never
has a value pasted into it: a reference inside such an input is refused at registration
(CLI and HTTP API), and a registry row holding one fails its ticket at run time. The safe
pattern, the value as an input of its own read as "$INPUT_<KEY>", runs it as text."""

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
    "pass the value as an input of its own (name: ${steps.first.outputs.name}) and read it "
    'in the script as "$INPUT_NAME" or from $SWARM_INPUTS'
)


def line_for(source: str, agent: str = "shell@1.0.0", runs: str = "as its script") -> str:
    return (
        f"{source}: step 'say': inputs.command: ${{steps.first.outputs.name}} stands inside "
        f"text that agent {agent} runs {runs} (its value would run as code); {FIX}"
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
    ],
    ids=["builtin-shell", "whole-reference", "sh-c"],
)
def test_a_reference_inside_a_script_input_is_refused_at_registration(
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
    if agent_yaml is None:
        assert done.stderr == f"error: {line_for(source)}\n"
    else:
        runs = "as its script" if "sh -c" not in agent_yaml else "as code"
        assert done.stderr.startswith(f"error: {source}: step 'say': inputs.command: ")
        assert f"agent whole@1.0.0 runs {runs} (its value would run as code)" in done.stderr
        assert done.stderr.rstrip().endswith(FIX)
    assert snapshot(home / "registry.db") == before


def test_literal_text_and_one_whole_reference_register(home: Path, tmp_path: Path) -> None:
    steps = """
      - id: literal
        agent: shell
        inputs: {command: "echo '$${HOME}' literal"}
      - id: whole
        agent: shell
        inputs: {command: "${steps.first.outputs.script}"}
    """
    folder = write_workflow(tmp_path / "w", FIRST + steps)
    done = swarm_inproc(home, "workflow", "register", str(folder))
    assert done.returncode == 0, done.stderr


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


def test_an_agent_that_comes_to_run_its_input_fails_the_ticket(home: Path, tmp_path: Path) -> None:
    """A step names `runner` (the latest version): registered when it pasted nothing, it
    fails once the latest `runner` runs that input as its script."""
    safe = "name: runner\nversion: 1.0.0\nkind: shell\ncommand: echo ${inputs.script}\n"
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
        "${steps.first.outputs.name} stands inside text that agent runner@2.0.0 runs as its "
        "script (its value would run as code); " + FIX
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
