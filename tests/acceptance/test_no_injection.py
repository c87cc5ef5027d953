"""A ticket's title or inputs substituted into an agent's shell command run as text, never as
shell code: the shell-injection case of issue 9, through the real CLI and a real sandbox."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.support.api import start_api
from tests.support.cli import query, snapshot, swarm, swarm_inproc

TITLE = "x; echo INJECTED; id"
HOSTILE = "$(echo INJECTED) `echo INJECTED` '\"; echo INJECTED #\n*"


def run(home: Path, *create: str) -> dict[str, object]:
    swarm(home, "ticket", "create", *create, check=True)
    done = swarm(home, "run-ticket", "1", "--wait", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    out: dict[str, object] = json.loads(done.stdout)
    return out


def test_the_title_in_a_shell_command_runs_as_text(home: Path, tmp_path: Path) -> None:
    folder = write_agent(
        tmp_path / "greet",
        'name: greet\nversion: 1.0.0\nkind: shell\ncommand: "echo Hello ${ticket.title}"\n',
    )
    swarm(home, "agent", "register", str(folder), check=True)
    out = run(home, "--title", TITLE, "--agent", "greet")
    assert out["result"] == {"stdout": f"Hello {TITLE}\n", "stderr": "", "exit_code": 0}


def test_values_stay_one_literal_word_in_every_quoting(home: Path, tmp_path: Path) -> None:
    folder = write_agent(
        tmp_path / "words",
        """
        name: words
        kind: shell
        command: |
          printf '[%s]' ${inputs.v} "dq ${inputs.v}" 'sq ${inputs.v}' --v=${inputs.v}
          printf '[%s]' "$(printf %s ${inputs.v})" ${ticket.title}  # it's ${inputs.v}
        inputs: {properties: {v: {type: string}}}
        """,
    )
    argv = write_agent(
        tmp_path / "argv",
        "name: argv\nkind: shell\ncommand: [printf, '[%s]', '${inputs.v}', '${ticket.title}']\n",
    )
    for package in (folder, argv):
        swarm(home, "agent", "register", str(package), check=True)
    v = HOSTILE
    out = run(home, "--title", TITLE, "--agent", "words", "--input", f"v={v}")
    stdout = f"[{v}][dq {v}][sq {v}][--v={v}][{v}][{TITLE}]"
    assert out["result"] == {"stdout": stdout, "stderr": "", "exit_code": 0}

    swarm(home, "ticket", "create", "--title", TITLE, "--agent", "argv", "--input", f"v={v}",
          check=True)  # fmt: skip
    done = swarm(home, "run-ticket", "2", "--wait", "--json")
    assert json.loads(done.stdout)["result"]["stdout"] == f"[{v}][{TITLE}]", done.stderr


@pytest.mark.parametrize(
    "command",
    ["[sh, -c, 'echo Hello ${ticket.title}']", "[python3, -c, 'print(\"${inputs.v}\")']",
     "[echo, 'a ${inputs.v}']", "[echo, '${inputs.v}${inputs.v}']"],
)  # fmt: skip
def test_a_reference_inside_an_argv_element_is_refused(
    home: Path, tmp_path: Path, command: str
) -> None:
    """In a list, a value is one whole argument or nothing: embedded, it could be code
    for the program that receives it (`sh -c`, `python3 -c`)."""
    package = write_agent(tmp_path / "embed", f"name: embed\nkind: shell\ncommand: {command}\n")
    done = swarm(home, "agent", "register", str(package))
    assert done.returncode == 5, done.stdout + done.stderr
    assert "must be a whole element" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("command", "where"),
    [
        ("echo $(( ${inputs.n} + 1 ))", "stands inside $((...))"),
        ("echo `cat ${inputs.f}`", "stands inside backquotes"),
        ("echo $${X:-${inputs.f}}", "stands inside a $${...} expansion"),
        ("cat <<EOF\\n${inputs.f}\\nEOF", "stands after a here-document (<<)"),
    ],
)
def test_a_reference_where_no_quoting_holds_is_refused_at_registration(
    home: Path, tmp_path: Path, command: str, where: str
) -> None:
    folder = write_agent(tmp_path / "bad", f'name: bad\nkind: shell\ncommand: "{command}"\n')
    before = snapshot(home / "registry.db")
    done = swarm_inproc(home, "agent", "register", str(folder))
    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: {folder / 'agent.yaml'}: command: ${{inputs.")
    assert where in done.stderr
    assert snapshot(home / "registry.db") == before
    assert (
        query(home / "registry.db", "SELECT count(*) AS n FROM agents WHERE name = 'bad'")[0]["n"]
        == 0
    )


def test_a_command_that_is_one_reference_runs_that_value_as_its_script(
    home: Path, tmp_path: Path
) -> None:
    """Like the built-in shell agent's inputs.command: the definition hands its whole
    command to one input, so that input is the script (nothing is pasted into a command
    of the author's)."""
    package = write_agent(
        tmp_path / "whole", 'name: whole\nkind: shell\ncommand: "${inputs.cmd}"\n'
    )
    swarm(home, "agent", "register", str(package), check=True)
    swarm(home, "ticket", "create", "--title", "t", "--agent", "whole", "--input",
          "cmd=echo a; echo b", check=True)  # fmt: skip
    done = swarm(home, "run-ticket", "1", "--wait", "--json")
    assert json.loads(done.stdout)["result"]["stdout"] == "a\nb\n", done.stderr


def test_a_ticket_field_is_never_the_whole_command(home: Path, tmp_path: Path) -> None:
    """`command: ${ticket.title}` ran a ticket's title as the step's script, whatever a
    workflow said (a workflow step gives an input that is a whole command literal text
    only, but a title is no input). It is refused at registration, and a registry row
    holding it fails its ticket at plan time, one line each; `${inputs.<key>}` as the
    whole command stays (the workflow rule covers it)."""
    pkg = tmp_path / "titled"
    pkg.mkdir()
    (pkg / "agent.yaml").write_text("name: titled\nkind: shell\ncommand: ${ticket.title}\n")
    refused = swarm(home, "agent", "register", str(pkg))
    assert refused.returncode == 5, refused.stderr
    assert "command: ${ticket.title} is the whole command" in refused.stderr
    assert "sh -c ${ticket.title}" in refused.stderr
    spec = json.dumps({"name": "titled", "version": "1.0.0", "kind": "shell",
                       "command": "${ticket.title}"})  # fmt: skip
    with sqlite3.connect(home / "registry.db") as db:
        db.execute(
            "INSERT INTO agents (name, version, kind, spec) VALUES ('titled', '1.0.0', 'shell', ?)",
            (spec,),
        )
    swarm(home, "ticket", "create", "--title", "echo PWNED; id", "--agent", "titled", check=True)
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=60)
    assert done.returncode == 0, done.stderr
    (row,) = query(home / "tickets.db", "SELECT status, error, result FROM tickets")
    assert row["status"] == "failed" and "is the whole command" in row["error"], row
    assert "PWNED" not in str(row["result"])


SCRIPTED = "sh -c 'echo Hello ${ticket.title}'"


def test_a_reference_inside_a_shell_s_script_is_refused_everywhere(
    home: Path, tmp_path: Path
) -> None:
    """`sh -c 'echo Hello ${ticket.title}'` ran the title as code in the inner shell (the
    outer one kept it one word: the script). Refused at registration (CLI exit 5, HTTP
    422, one line, nothing written); a registry row holding it, or an agent a workflow
    feeds another step's output, fails its ticket at plan time with that line; the form
    the line suggests runs the title as data."""
    folder = write_agent(tmp_path / "greet", f'name: greet\nkind: shell\ncommand: "{SCRIPTED}"\n')
    before = snapshot(home / "registry.db")
    done = swarm_inproc(home, "agent", "register", str(folder))
    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stderr == (
        f"error: {folder / 'agent.yaml'}: command: ${{ticket.title}} stands inside the script"
        " of `sh -c`, which reads it as code: its value would run; pass it as an argument"
        " after the script and read it there: sh -c '... \"$1\" ...' _ ${ticket.title} (or"
        " read $INPUT_<KEY> or the inputs file)\n"
    )
    api = start_api(home, token="t0ken-scripted-refs")
    try:
        for command in (SCRIPTED, "bash -ec 'echo ${inputs.x}'", 'eval "echo ${inputs.x}"'):
            got = api.post("/v1/agents", json={"name": "greet", "command": command})
            assert got.status_code == 422, got.text
            assert "which reads it as code" in got.json()["message"], got.text
    finally:
        api.stop()
    assert snapshot(home / "registry.db") == before

    rows = {
        "greet": SCRIPTED,
        "say": "bash -c 'echo said ${inputs.x}'",
        "safe": "sh -c 'echo Hello \"$1\"' _ ${ticket.title}",
    }
    relay = {"name": "relay", "version": "1.0.0", "steps": [
        {"id": "a", "agent": "echo", "inputs": {"v": "${inputs.v}"}},
        {"id": "b", "agent": "say", "inputs": {"x": "${steps.a.outputs.v}"}},
    ]}  # fmt: skip
    with sqlite3.connect(home / "registry.db") as db:
        for name, command in rows.items():
            spec = {"name": name, "version": "1.0.0", "kind": "shell", "command": command}
            db.execute(
                "INSERT INTO agents (name, version, kind, spec) VALUES (?, '1.0.0', 'shell', ?)",
                (name, json.dumps(spec)),
            )
        db.execute(
            "INSERT INTO workflows (name, version, spec) VALUES ('relay', '1.0.0', ?)",
            (json.dumps(relay),),
        )
    db.close()
    swarm(home, "ticket", "create", "--title", TITLE, "--agent", "greet", check=True)
    swarm(home, "ticket", "create", "--title", "relay", "--workflow", "relay",
          "--inputs-json", json.dumps({"v": TITLE}), check=True)  # fmt: skip
    swarm(home, "ticket", "create", "--title", TITLE, "--agent", "safe", check=True)
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=120)
    assert done.returncode == 0, done.stderr
    greet, relayed, safe = query(home / "tickets.db", "SELECT * FROM tickets ORDER BY id")
    assert greet["status"] == "failed" and greet["error"] == (
        "agent greet@1.0.0 in the registry: command: ${ticket.title} stands inside the script"
        " of `sh -c`, which reads it as code: its value would run; pass it as an argument"
        " after the script and read it there: sh -c '... \"$1\" ...' _ ${ticket.title} (or"
        " read $INPUT_<KEY> or the inputs file)"
    ), greet
    assert relayed["status"] == "failed", relayed
    assert relayed["error"].startswith(
        "agent say@1.0.0 in the registry: command: ${inputs.x} stands inside the script of"
        " `bash -c`, which reads it as code"
    ), relayed
    assert safe["status"] == "done", safe
    assert json.loads(safe["result"])["stdout"] == f"Hello {TITLE}\n"
    steps = query(home / "tickets.db", "SELECT agent_name, outputs FROM step_executions")
    assert {s["agent_name"] for s in steps} == {"safe"}  # nothing ran for the refused ones
    assert "INJECTED\n" not in json.dumps(steps) and "uid=" not in json.dumps(steps)
