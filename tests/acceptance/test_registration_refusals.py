"""`agent register` / `workflow register` validate everything: exit 5, one line naming the
file and the field, and nothing written (registry unchanged, no package folder copied)."""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent, write_workflow
from tests.support.api import start_api
from tests.support.cli import (
    env_for,
    insert_open_tickets,
    query,
    snapshot,
    sqlite_shell,
    swarm,
    swarm_inproc,
)
from tests.support.hostile_yaml import BOMB, WORKFLOW_BOMB

from swarm_engine.registry.loader import MAX_DEFINITION_BYTES

AT_MOST = "Input should be less than or equal to"
AGENT_CAPS = [
    ("shell", "timeout_seconds: 604800.5", "timeout_seconds", 604800),
    ("shell", "retry: {max_backoff_seconds: 1.0e+300}", "retry.max_backoff_seconds", 604800),
    ("shell", "model_api: {budget: {max_tokens: 1099511627777}}", "budget.max_tokens", 2**40),
    ("shell", "model_api: {budget: {max_usd: 1.0e+300}}", "model_api.budget.max_usd", 1000000),
    ("claude", "config: {budget: {max_tokens: 1099511627777}}", "config.budget.max_tokens", 2**40),
    ("claude-code", "config: {budget: {max_usd: 1.0e+7}}", "config.budget.max_usd", 1000000),
    ("claude", "config: {prices: {m: {input: 1.0e+300, output: 1}}}", "m.input", 1000000),
]
WORKFLOW_CAPS = [
    ("", ", timeout_seconds: 1.0e+20", "steps.0.timeout_seconds", 604800),
    ("", ", timeout_seconds: 604800.5", "steps.0.timeout_seconds", 604800),
    ("", ", retry: {max_backoff_seconds: 1.0e+9}", "steps.0.retry.max_backoff_seconds", 604800),
    ("timeout_seconds: 1.0e+20\n", "", "workflow.yaml: timeout_seconds", 31536000),
]


def state(home: Path) -> tuple[list[str], list[str], list[str]]:
    packages = home / "packages"
    files = (
        sorted(str(p.relative_to(home)) for p in packages.rglob("*")) if packages.exists() else []
    )
    return snapshot(home / "registry.db"), snapshot(home / "tickets.db"), files


def refused(home: Path, args: list[str], message: str) -> str:
    """Run a register command that must fail: exit 5, one `error:` line holding `message`,
    nothing written. Returns the line."""
    before = state(home)
    done = swarm_inproc(home, *args)
    assert done.returncode == 5, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert message in lines[0], lines[0]
    assert done.stdout == ""
    assert state(home) == before
    return lines[0]


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("name: x\nkind: bogus\n", "agent.yaml: kind: unknown agent kind 'bogus' (known: claude"),
        ("name: x\nkind: shell\nvm: {memory: 64}\n", "agent.yaml: vm.memory: Extra inputs"),
        ("name: x\nkind: shell\nretry: {tries: 3}\n", "agent.yaml: retry.tries: Extra inputs"),
        ("name: x\nkind: claude\nconfig: {modle: m}\n", "agent.yaml: config.modle: Extra inputs"),
        ("name: x\nkind: claude\nconfig: {budget: {usd: 1}}\n", "budget.usd: Extra inputs"),
        ("name: x\nkind: shell\nconfig: {a: 1}\n", "config.a: kind 'shell' takes no config"),
        ("name: x\nkind: echo\ncommand: ls\n", "agent.yaml: command: kind 'echo' runs no command"),
        ("name: x\ncommand: []\n", "agent.yaml: command: must not be an empty list"),
        ("name: x\ncommand: ''\n", "agent.yaml: command: must not be empty or blank"),
        ("name: x\ncommand: '   '\n", "agent.yaml: command: must not be empty or"),
        ("name: x\ncommand: ['']\n", "command: its first item, the program, must"),
        ("name: x\ncommand: [' ', a]\n", "command: its first item, the program, mu"),
        ('name: x\ncommand: ["\\u0000"]\n', "agent.yaml: command: contains a NUL character"),
        ('name: x\ncommand: "echo a\\u0000b"\n', "agent.yaml: command: contains a NUL character"),
        ("name: x\nkind: shell\ncommand: echo ${HOME}\n", "agent.yaml: command: unknown namesp"),
        ("name: x\nkind: shell\ncommand: echo ${HOME:-x}\n", "command: malformed reference"),
        ("name: x\nkind: shell\ncommand: [echo, '${variables.v}']\n", "command.1: unknown"),
        ("name: x\nkind: shell\ncommand: echo ${ticket.owner}\n", "a ticket has only"),
        (
            "name: x\nkind: shell\ncommand: echo ${inputs.txt}\n"
            "inputs: {properties: {text: {type: string}}}\n",
            "command: ${inputs.txt}: 'txt' is not declared in inputs.properties (declared: text)",
        ),
        ("name: x\nkind: shell\ninputs: {type: 12}\n", "agent.yaml: inputs.type: not a valid JSON"),
        (
            "name: x\nkind: shell\nenv: {A-B: '1'}\n",
            "env: 'A-B' is not an environment variable name",
        ),
        ("name: x\nkind: shell\nenv: {A: '" + "v" * 40000 + "'}\n", "env.A: over 32 KiB"),
        (BOMB, "agent.yaml: invalid YAML (line 4, column 7): YAML anchors and aliases"),
        ("name: x\nkind: shell\nname: y\n", "key 'name' is given twice"),
        *(
            (f"name: x\nkind: claude-code\nmemory_mb: 2048\nconfig: {config}\n", message)
            for config, message in [
                ("{model: ''}", "agent.yaml: config.model: String should match pattern"),
                ('{model: "m\\nx"}', "agent.yaml: config.model: String should match pattern"),
                ("{model: -p}", "agent.yaml: config.model: String should match pattern"),
                ("{max_turns: true}", "config.max_turns: Input should be a valid integer"),
                ("{max_turns: '5'}", "config.max_turns: Input should be a valid integer"),
                ("{budget: {max_usd: .inf}}", "config.budget.max_usd: .inf is not a finite"),
                ("{budget: {max_tokens: 1.0}}", "config.budget.max_tokens: Input should be a"),
            ]
        ),
        *(  # the claude kind's model is held to the same rule as claude-code's
            (f"name: x\nkind: claude\nconfig: {config}\n", message)
            for config, message in [
                ("{model: ''}", "agent.yaml: config.model: String should match pattern"),
                ('{model: "m\\nx"}', "agent.yaml: config.model: String should match pattern"),
                ("{model: -p}", "agent.yaml: config.model: String should match pattern"),
                ("{model: 5}", "agent.yaml: config.model: Input should be a valid string"),
                ("{request_timeout: '30'}", "config.request_timeout: Input should be a valid n"),
                ("{retry: {backoff_seconds: '1'}}", "config.retry.backoff_seconds: Input should"),
                ("{max_tokens: '100'}", "config.max_tokens: Input should be a valid integer"),
            ]
        ),
        (
            "name: x\nkind: shell\nmodel_api: {budget: {max_usd: .inf}}\n",
            "model_api.budget.max_usd: .inf is not a finite number",
        ),
        (
            "name: x\nkind: shell\ntimeout_seconds: '30'\n",
            "timeout_seconds: Input should be a valid number, not the text '30' (YAML reads",
        ),
        (
            "name: x\nkind: shell\ntimeout_seconds: true\n",
            "timeout_seconds: Input should be a valid number, not True",
        ),
        (
            "name: x\nkind: shell\ntimeout_seconds: 1e3\n",
            "not the text '1e3' (YAML reads 1e3 and quoted numbers as text: write 1000 or 1.0e+3)",
        ),
        ("name: x\nkind: shell\nmemory_mb: '512'\n", "not the text '512' (write the number"),
        *(  # the path rule the claude kinds read output files with, at registration
            (
                f"name: x\nkind: {kind}\nmemory_mb: 2048\noutput_files: [out.txt, {path}]\n",
                f"agent.yaml: output_files.1: path '{path}' is outside the VM workspace",
            )
            for kind in ("claude", "claude-code")
            for path in ("../../etc/passwd", "/etc/passwd", "/workspace/../x")
        ),
        *(  # a path that cannot name a file: the workspace itself, or a folder by its form
            (
                f"name: x\nkind: {kind}\nmemory_mb: 2048\noutput_files: [out.txt, {path!r}]\n",
                f"agent.yaml: output_files.1: path {path!r} names {what}, not a file",
            )
            for kind in ("claude", "claude-code", "shell")
            for path, what in (
                (".", "the VM workspace itself"),
                ("", "the VM workspace itself"),
                ("./", "the VM workspace itself"),
                ("a/..", "the VM workspace itself"),
                ("/workspace", "the VM workspace itself"),
                ("/workspace/", "the VM workspace itself"),
                ("out/", "a folder"),
                ("out/.", "a folder"),
                ("a/b/..", "a folder"),
            )
        ),
        ("name: x\nkind: shell\ntimeout_seconds: .inf\n", "timeout_seconds: .inf is not a finite"),
        *(  # every number of a definition has a cap, as timeout_seconds has
            (f"name: x\nkind: {kind}\nmemory_mb: 2048\n{line}\n", f"{field}: {AT_MOST} {cap}")
            for kind, line, field, cap in AGENT_CAPS
        ),
        ("name: x\nkind: shell\nretry: {backoff_seconds: '1'}\n", "retry.backoff_seconds: In"),
        ("name: x\nkind: shell\nvcpus: true\n", "agent.yaml: vcpus: Input should be a valid int"),
        ("name: x\nkind: shell\nvm: {network: 'yes'}\n", "vm.network: Input should be a valid"),
    ],
)
def test_bad_agents_are_refused(home: Path, tmp_path: Path, yaml_text: str, message: str) -> None:
    folder = write_agent(tmp_path / "bad", yaml_text, {"run.sh": "echo hi\n"})
    line = refused(home, ["agent", "register", str(folder)], message)
    assert str(folder / "agent.yaml") in line


def test_one_bad_agent_among_many_registers_none_and_copies_nothing(
    home: Path, tmp_path: Path
) -> None:
    write_agent(tmp_path / "all" / "good", "name: good\nkind: shell\ncommand: 'true'\n")
    write_agent(tmp_path / "all" / "zbad", "name: zbad\nkind: shel\n")
    refused(home, ["agent", "register", "--all", str(tmp_path / "all")], "kind: unknown agent")


def test_the_escape_and_declared_inputs_are_accepted(home: Path, tmp_path: Path) -> None:
    folder = write_agent(
        tmp_path / "ok",
        """
        name: ok
        kind: shell
        command: echo "$${HOME:-none}" ${inputs.text} ${ticket.title}
        inputs: {properties: {text: {type: string}}}
        env: {GREETING: hi}
        """,
    )
    done = swarm_inproc(home, "agent", "register", str(folder))
    assert done.returncode == 0, done.stderr


def test_an_oversized_agent_yaml_is_refused(home: Path, tmp_path: Path) -> None:
    folder = write_agent(tmp_path / "big", "name: big\nkind: shell\n#" + "x" * MAX_DEFINITION_BYTES)
    refused(home, ["agent", "register", str(folder)], "agent.yaml: over 1024 KiB (the limit")


def test_an_oversized_package_is_refused_and_not_copied(home: Path, tmp_path: Path) -> None:
    folder = write_agent(tmp_path / "heavy", "name: heavy\nkind: shell\ncommand: 'true'\n")
    with (folder / "blob.bin").open("wb") as f:  # sparse: no disk used
        f.truncate(64 * 1024 * 1024 + 1)
    refused(home, ["agent", "register", str(folder)], "heavy: the agent package is over 64 MiB")


WORKFLOWS = [
    ("name: w\nsteps:\n  - {id: a, agent: echo, bogus: 1}\n", "steps.0.bogus: Extra inputs"),
    ("name: w\nsteps:\n  - {id: a, agent: echo, retry: {n: 1}}\n", "steps.0.retry.n: Extra"),
    ("name: w\nsteps:\n  - {id: a, agent: 'echo@9.9'}\n", "step 'a': unknown agent 'echo@9.9'"),
    (
        "name: w\nsteps:\n  - {id: a, agent: echo, inputs: {t: 'x ${ticket.owner}'}}\n",
        "step 'a': inputs.t: ${ticket.owner}: a ticket has only",
    ),
    (
        "name: w\nsteps:\n  - {id: a, agent: echo, inputs: {t: [ok, 'a ${b']}}\n",
        "step 'a': inputs.t.1: malformed reference '${b'",
    ),
    (
        "name: w\nsteps:\n  - {id: a, agent: echo}\noutputs: {r: '${steps.a.stdout}'}\n",
        "outputs.r: ${steps.a.stdout} must look like",
    ),
    (
        "name: w\nsteps:\n  - {id: a, agent: echo}\noutputs: {r: '${steps.z.outputs.x}'}\n",
        "outputs reference unknown step 'z'",
    ),
    ("name: w\nsteps:\n  - {id: a, agent: echo, timeout_seconds: '30'}\n", "steps.0.timeout_s"),
    ("name: w\nsteps:\n  - {id: a, agent: echo, timeout_seconds: .inf}\n", "a finite number"),
    ("name: w\ntimeout_seconds: '30'\nsteps:\n  - {id: a, agent: echo}\n", "timeout_seconds: In"),
    ("name: w\ntimeout_seconds: .inf\nsteps:\n  - {id: a, agent: echo}\n", "a finite number"),
    *(  # capped as an agent's are: past them a number is no time (prlimit failed every run)
        (f"name: w\n{head}steps:\n  - {{id: a, agent: echo{step}}}\n", f"{field}: {AT_MOST} {cap}")
        for head, step, field, cap in WORKFLOW_CAPS
    ),
    (WORKFLOW_BOMB, "workflow.yaml: invalid YAML (line 6, column 11): YAML anchors and aliases"),
]


@pytest.mark.parametrize(("yaml_text", "message"), WORKFLOWS)
def test_bad_workflows_are_refused(
    home: Path, tmp_path: Path, yaml_text: str, message: str
) -> None:
    folder = write_workflow(tmp_path / "wf", yaml_text)
    line = refused(home, ["workflow", "register", str(folder)], message)
    assert str(folder / "workflow.yaml") in line


def test_an_alias_bomb_is_refused_fast_by_a_small_process(home: Path, tmp_path: Path) -> None:
    """The real command, under a 1 GiB address-space cap and a 30 s CPU cap (so a
    regression fails instead of eating the machine): exit 5 at once, a small peak RSS."""
    folder = write_agent(tmp_path / "bomb", BOMB)
    before = state(home)

    def caps() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        resource.setrlimit(resource.RLIMIT_CPU, (30, 30))

    # the command's own peak, read as it exits (`VmHWM`): a child's `ru_maxrss` also
    # counts the pages of the process it was forked from (here pytest, of any size)
    peak_file = tmp_path / "peak"
    measured = (
        "import atexit, runpy, sys\n"
        "def peak():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        f"            open({str(peak_file)!r}, 'w').write(line.split()[1])\n"
        "atexit.register(peak)\n"
        "sys.argv = ['swarm-engine', *sys.argv[1:]]\n"
        "runpy.run_module('swarm_engine', run_name='__main__', alter_sys=True)\n"
    )
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", measured, "agent", "register", str(folder)],
        env=env_for(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=caps,
    )
    assert proc.stderr is not None
    with proc.stderr:
        stderr = proc.stderr.read()
    _, status, _ = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - started
    assert proc.returncode == 5, stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1
    assert "YAML anchors and aliases" in stderr
    peak_kib = int(peak_file.read_text())
    assert peak_kib < 200 * 1024, f"peak RSS {peak_kib} KiB"
    assert elapsed < 20
    assert state(home) == before


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ('name: "echo\\n"\n', "name: must be lowercase letters"),
        ('name: echo2\nversion: "1.0.0\\n"\n', "version: must be a version like 1.0.0"),
    ],
    ids=["name", "version"],
)
def test_a_last_newline_is_no_name_nor_version(
    home: Path, tmp_path: Path, head: str, message: str
) -> None:
    """`$` also matched before a last newline: `echo\\n` registered as a second `echo`."""
    folder = write_agent(tmp_path / "a", head + "kind: echo\n")
    refused(home, ["agent", "register", str(folder)], "agent.yaml: " + message)
    folder = write_workflow(tmp_path / "w", head + "steps:\n  - {id: a, agent: echo}\n")
    refused(home, ["workflow", "register", str(folder)], "workflow.yaml: " + message)


def test_the_http_api_refuses_a_last_newline_in_a_name(home: Path) -> None:
    api = start_api(home, token="t0ken-newline-names")
    try:
        before = snapshot(home / "registry.db")
        for body, field in [
            ({"name": "echo\n", "kind": "echo"}, "name"),
            ({"name": "echo2", "version": "1.0.0\n", "kind": "echo"}, "version"),
        ]:
            got = api.post("/v1/agents", json=body)
            assert got.status_code == 422, got.text
            assert got.json()["message"].startswith(f"agent: {field}: must be"), got.text
        template = {"name": "_template:claude-code", "version": "2.0.0", "kind": "claude-code"}
        got = api.post("/v1/agents", params={"force": "true"}, json=template)
        assert got.status_code == 422, got.text  # a reserved name, as docs/agents.md says
        assert got.json()["message"] == "agent: names starting with '_template:' are reserved"
        got = api.post(
            "/v1/workflows", json={"name": "w\n", "steps": [{"id": "a", "agent": "echo"}]}
        )
        assert got.status_code == 422, got.text
        assert snapshot(home / "registry.db") == before
    finally:
        api.stop()


def test_rows_with_a_last_newline_fail_only_their_tickets(home: Path, tmp_path: Path) -> None:
    """Rows written past registration: a ticket naming `echo\\n` fails with one line (the
    built-in `echo` runs on), and a version `1.0.0\\n` is never taken as the latest."""
    shell = {"name": "echo\n", "version": "1.0.0", "kind": "shell", "command": "echo INJECTED"}
    good = {"name": "wc", "version": "1.0.0", "kind": "echo"}
    newer = {"name": "wc", "version": "1.0.0\n", "kind": "shell", "command": "echo INJECTED"}
    conn = sqlite3.connect(home / "registry.db")
    with conn:
        for spec in (shell, good, newer):
            conn.execute(
                "INSERT INTO agents (name, version, kind, spec) VALUES (?, ?, ?, ?)",
                (spec["name"], spec["version"], spec["kind"], json.dumps(spec)),
            )
    conn.close()
    done = swarm(home, "ticket", "create", "--title", "t", "--agent", "echo\n")
    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "agent echo\\n@1.0.0 in the registry" in done.stderr
    insert_open_tickets(home / "tickets.db", [("bad", "echo\n", "{}"), ("ok", "echo", "{}")])
    swarm(home, "ticket", "create", "--title", "wc", "--agent", "wc", check=True)
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    tickets = {t["title"]: t for t in query(home / "tickets.db", "SELECT * FROM tickets")}
    assert tickets["bad"]["status"] == "failed"
    assert "\n" not in tickets["bad"]["error"]
    assert tickets["bad"]["error"].startswith(
        "agent echo\\n@1.0.0 in the registry: spec.name: must be lowercase"
    ), tickets["bad"]["error"]
    assert tickets["ok"]["status"] == "done" and tickets["wc"]["status"] == "done"
    steps = query(
        home / "tickets.db", "SELECT agent_name, agent_version, outputs FROM step_executions"
    )
    assert "INJECTED" not in json.dumps(steps)
    wc = [s for s in steps if s["agent_name"] == "wc"]
    assert [s["agent_version"] for s in wc] == ["1.0.0"]


NOT_JSON = [
    ("command: !!binary ZWNobyBoaQ==", "command: !!binary is not allowed; a definition holds"),
    ("command: !!binary /w==", "command: !!binary is not allowed"),  # not UTF-8: a traceback
    ("description: 2024-01-01", "description: a date or time (!!timestamp) is not allowed"),
    ("env: {WHEN: 2024-01-01 10:00:00}", "env.WHEN: a date or time (!!timestamp) is not"),
    ("inputs: {enum: !!set {a, b}}", "inputs.enum: !!set is not allowed"),
    ("inputs: {enum: !!omap [a: 1]}", "inputs.enum: !!omap is not allowed"),
    ("inputs: {properties: {1: {}}}", "inputs.properties: the key '1' is !!int, not text"),
    ("config: {yes: 1}", "config: the key 'yes' is !!bool, not text"),
    ("inputs: {properties: {x: !local {}}}", "inputs.properties.x: !local is not allowed"),
]


@pytest.mark.parametrize(("line", "message"), NOT_JSON)
def test_yaml_beyond_json_s_types_is_refused_naming_the_field(
    home: Path, tmp_path: Path, line: str, message: str
) -> None:
    """`!!binary` became text past every check (or a traceback, not UTF-8); dates, sets
    and keys that are not text are no JSON either: exit 5, one line naming the field."""
    folder = write_agent(tmp_path / "a", f"name: x\nkind: shell\n{line}\n")
    refused(home, ["agent", "register", str(folder)], "agent.yaml: invalid YAML (line 3, ")
    refused(home, ["agent", "register", str(folder)], message)
    text = f"name: w\nsteps:\n  - id: a\n    agent: echo\n    inputs:\n      {line}\n"
    folder = write_workflow(tmp_path / "w", text)
    refused(home, ["workflow", "register", str(folder)], "(line 6, column ")
    refused(home, ["workflow", "register", str(folder)], f"steps.0.inputs.{message}")


def test_a_non_utf8_binary_is_one_line_from_the_real_command(home: Path, tmp_path: Path) -> None:
    text = "name: w\nsteps:\n  - {id: a, agent: shell, inputs: {command: !!binary /w==}}\n"
    folder = write_workflow(tmp_path / "w", text)
    done = swarm(home, "workflow", "register", str(folder))
    assert done.returncode == 5, done.stderr
    assert done.stderr == (
        f"error: {folder / 'workflow.yaml'}: invalid YAML (line 3, column 45): "
        "steps.0.inputs.command: !!binary is not allowed; a definition holds only text, "
        "numbers, true/false, null, lists and mappings\n"
    )


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_template_s_name_is_reserved_not_a_conflict(
    home: Path, tmp_path: Path, force: list[str]
) -> None:
    """`_template:claude-code@2.0.0` is refused as a bad definition (exit 5), as any
    `_template:` name is, before the registry is read (docs/agents.md)."""
    text = "name: _template:claude-code\nversion: 2.0.0\nkind: claude-code\n"
    folder = write_agent(tmp_path / "t", text)
    refused(
        home,
        ["agent", "register", *force, str(folder)],
        f"{folder / 'agent.yaml'}: names starting with '_template:' are reserved",
    )


def test_agent_list_shows_built_ins_from_the_code(home: Path, tmp_path: Path) -> None:
    """Rows are any writer's: the built-in `echo` row rewritten to `kind='shell'`, a
    hand-written `shell@2.0.0` and a user agent marked built in. `agent list` (and
    `GET /v1/agents`) show what `agent show` and the engine use: the code's built-ins."""
    folder = write_agent(tmp_path / "mine", "name: mine\nkind: echo\n")
    swarm_inproc(home, "agent", "register", str(folder)).check_returncode()
    fake = {"name": "shell", "version": "2.0.0", "kind": "shell", "command": "id"}
    sqlite_shell(
        home / "registry.db",
        "UPDATE agents SET kind = 'shell', description = 'rewritten',"
        " spec = json_set(spec, '$.kind', 'shell', '$.command', 'id') WHERE name = 'echo';"
        " UPDATE agents SET builtin = 1 WHERE name = 'mine';"
        " INSERT INTO agents (name, version, kind, spec) VALUES"
        f" ('shell', '2.0.0', 'shell', '{json.dumps(fake)}')",
    )
    done = swarm(home, "agent", "list", "--json", check=True)
    listed = {(a["name"], a["version"]): a for a in json.loads(done.stdout)}
    echo = listed[("echo", "1.0.0")]
    assert (echo["kind"], echo["builtin"], echo["spec"]["kind"]) == ("echo", 1, "echo")
    assert echo["description"].startswith("Returns its inputs")
    assert echo["spec"].get("command") is None
    assert ("shell", "2.0.0") not in listed and listed[("shell", "1.0.0")]["builtin"] == 1
    assert listed[("mine", "1.0.0")]["builtin"] == 0
    shown = json.loads(swarm(home, "agent", "show", "echo", "--json", check=True).stdout)
    assert echo["spec"] == shown
    table = swarm(home, "agent", "list", check=True, COLUMNS="200").stdout
    echo_line = next(line for line in table.splitlines() if line.split()[:1] == ["echo"])
    assert echo_line.split()[:4] == ["echo", "1.0.0", "echo", "yes"], table
    api = start_api(home, token="t0ken-builtin-list")
    try:
        got = {(a["name"], a["version"]): a for a in api.get("/v1/agents").json()}
        assert got[("echo", "1.0.0")]["kind"] == "echo" and ("shell", "2.0.0") not in got
    finally:
        api.stop()


CHANGED = "is a number YAML would change (octal, hexadecimal, binary, sexagesimal or with '_')"
NUMBERS = [
    ("timeout_seconds: 1:30", f"timeout_seconds: 1:30 {CHANGED}; write it in decimal"),
    ("timeout_seconds: 0x1e", f"timeout_seconds: 0x1e {CHANGED}"),
    ("memory_mb: 01000", f"memory_mb: 01000 {CHANGED}"),
    ("vcpus: 0b1", f"vcpus: 0b1 {CHANGED}"),
    ("memory_mb: 1_024", f"memory_mb: 1_024 {CHANGED}"),
    ("inputs: {default: .inf}", "inputs.default: .inf is not a finite number"),
    ("inputs: {default: -.Inf}", "inputs.default: -.Inf is not a finite number"),
    ("inputs: {default: .nan}", "inputs.default: .nan is not a finite number"),
    ("inputs: {default: 1.0e+999}", "inputs.default: 1.0e+999 is too large a number"),
    ("inputs: {default: 9223372036854775808}", "inputs.default: 9223372036854775808 is outside"),
    ("inputs: {default: -9223372036854775809}", "inputs.default: -9223372036854775809 is out"),
    ("inputs: {default: " + "9" * 5000 + "}", "inputs.default: 99999999999999999999999999"),
    ("inputs: {default: 0x" + "f" * 5000 + "}", "inputs.default: 0xfffffffffffffffff"),
]


@pytest.mark.parametrize(("line", "message"), NUMBERS)
def test_numbers_yaml_would_change_are_refused_naming_the_field(
    home: Path, tmp_path: Path, line: str, message: str
) -> None:
    """`1:30` was 90 seconds, `0x1e` 30, `.inf` stored as null, a 5000-digit integer a
    traceback (or, in hexadecimal, a row no read could decode): exit 5, one line naming
    the field, its line and column, nothing written."""
    folder = write_agent(tmp_path / "a", f"name: x\nkind: shell\n{line}\n")
    refused(home, ["agent", "register", str(folder)], "agent.yaml: invalid YAML (line 3, column ")
    refused(home, ["agent", "register", str(folder)], message)
    if not line.startswith("inputs:"):
        return
    text = f"name: w\nsteps:\n  - id: a\n    agent: echo\n    {line}\n"
    folder = write_workflow(tmp_path / "w", text)
    refused(home, ["workflow", "register", str(folder)], "(line 5, column ")
    refused(home, ["workflow", "register", str(folder)], f"steps.0.{message}")


def test_plain_decimal_numbers_at_the_limits_register(home: Path, tmp_path: Path) -> None:
    text = (
        "name: x\nkind: shell\ntimeout_seconds: 1.0e+3\nmemory_mb: 1024\n"
        "inputs: {default: 9223372036854775807, minimum: -9223372036854775808, maximum: .5}\n"
    )
    done = swarm_inproc(home, "agent", "register", str(write_agent(tmp_path / "a", text)))
    assert done.returncode == 0, done.stderr
    text = (
        "name: w\ntimeout_seconds: 31536000\nsteps:\n  - id: a\n    agent: echo\n"
        "    timeout_seconds: 604800\n    retry: {max_backoff_seconds: 604800}\n"
    )
    done = swarm_inproc(home, "workflow", "register", str(write_workflow(tmp_path / "w", text)))
    assert done.returncode == 0, done.stderr
    text = (
        "name: y\nkind: shell\ntimeout_seconds: 604800\nretry: {max_backoff_seconds: 604800}\n"
        "model_api: {budget: {max_tokens: 1099511627776, max_usd: 1000000}}\n"
    )
    done = swarm_inproc(home, "agent", "register", str(write_agent(tmp_path / "y", text)))
    assert done.returncode == 0, done.stderr


NOT_TEXT = "Input should be a valid string, not the number"


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ("name: x\nversion: 1.10\n", f"version: {NOT_TEXT} 1.1 (quote it"),
        ("name: x\nversion: 1.0e+3\n", f"version: {NOT_TEXT} 1000.0 (quote it"),
        ("name: x\nversion: 2\n", f"version: {NOT_TEXT} 2 (quote it"),
        ("name: 5\n", f"name: {NOT_TEXT} 5 (quote it"),
        ("name: x\nversion: 010\n", "version: 010 is a number YAML would change"),
        ("name: x\nversion: 1:20\n", "version: 1:20 is a number YAML would change"),
    ],
)
def test_a_name_or_version_written_as_a_number_is_refused(
    home: Path, tmp_path: Path, head: str, message: str
) -> None:
    """`version: 1.10` registered `@1.1`, `010` `@8`, `1:20` `@80`, `1.0e+3` `@1000.0`:
    a version is text, so a number is refused, saying to quote it."""
    folder = write_agent(tmp_path / "a", head + "kind: echo\n")
    refused(home, ["agent", "register", str(folder)], message)
    folder = write_workflow(tmp_path / "w", head + "steps:\n  - {id: a, agent: echo}\n")
    refused(home, ["workflow", "register", str(folder)], message)


def test_the_http_api_refuses_a_name_or_version_given_as_a_number(home: Path) -> None:
    api = start_api(home, token="t0ken-numeric-versions")
    try:
        before = snapshot(home / "registry.db")
        for path, body in [
            ("/v1/agents", {"name": "x", "version": 1.10, "kind": "echo"}),
            ("/v1/agents", {"name": 5, "kind": "echo"}),
            ("/v1/workflows", {"name": "w", "version": 2, "steps": [{"id": "a", "agent": "echo"}]}),
        ]:
            got = api.post(path, json=body)
            assert got.status_code == 422, got.text
            message = got.json()["message"]
            assert "Input should be a valid string, not the number" in message, message
            assert "(quote it" in message, message
        for path, body in [  # as in YAML: integers within 64 bits only
            ("/v1/agents", {"name": "x", "kind": "echo", "inputs": {"default": 2**63}}),
            ("/v1/workflows", {"name": "w", "steps": [{"id": "a", "agent": "echo",
                                                       "inputs": {"n": [-(2**63) - 1]}}]}),
        ]:  # fmt: skip
            got = api.post(path, json=body)
            assert got.status_code == 422, got.text
            assert "an integer outside those a definition may hold" in got.json()["message"]
        assert snapshot(home / "registry.db") == before
    finally:
        api.stop()


def test_list_tables_show_a_row_s_name_with_its_control_characters_escaped(
    home: Path,
) -> None:
    """`agent list` / `workflow list` printed a hand-written row's `echo\\n` raw (so as a
    second `echo`): names and versions that are not plain show escaped, as errors do."""
    agents = [("echo\n", "1.0.0"), ("vm ", "1.0.0"), ("x\x1b[2J", "2.0.0\n")]
    workflows = [("w\n", "1.0.0"), ("w", "1.0.0\n")]
    conn = sqlite3.connect(home / "registry.db")
    with conn:
        for name, version in agents:
            spec = {"name": name, "version": version, "kind": "echo"}
            conn.execute(
                "INSERT INTO agents (name, version, kind, spec) VALUES (?, ?, 'echo', ?)",
                (name, version, json.dumps(spec)),
            )
        for name, version in workflows:
            spec = {"name": name, "version": version, "steps": [{"id": "a", "agent": "echo"}]}
            conn.execute(
                "INSERT INTO workflows (name, version, spec) VALUES (?, ?, ?)",
                (name, version, json.dumps(spec)),
            )
    conn.close()
    shown = swarm(home, "agent", "list", check=True).stdout
    assert "\x1b" not in shown
    for text in ("'echo\\n'", "'vm '", "x\\x1b[2J", "'2.0.0\\n'"):
        assert text in shown, shown
    lines = shown.splitlines()
    assert sum(1 for line in lines if line.split()[:1] == ["echo"]) == 1, shown
    shown = swarm(home, "workflow", "list", check=True).stdout
    assert "'w\\n'" in shown and "'1.0.0\\n'" in shown, shown


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink to /dev/zero"])
def test_an_agent_yaml_that_is_not_a_regular_file_is_named_so(
    home: Path, tmp_path: Path, kind: str
) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    file = folder / "agent.yaml"
    if kind == "fifo":
        os.mkfifo(file)
    elif kind == "directory":
        file.mkdir()
    else:
        file.symlink_to("/dev/zero")
    refused(home, ["agent", "register", str(folder)], f"{file}: not a regular file")


def test_a_fifo_in_place_of_a_checked_file_is_refused_without_waiting(tmp_path: Path) -> None:
    """A FIFO put where the checked file was (or read_yaml called on one) is opened
    without waiting for a writer that never comes, and refused."""
    from swarm_engine.errors import ConfigError
    from swarm_engine.registry.loader import read_yaml

    os.mkfifo(tmp_path / "agent.yaml")
    with pytest.raises(ConfigError, match=r"agent\.yaml: not a regular file"):
        read_yaml(tmp_path / "agent.yaml")


def test_the_note_of_a_new_store_escapes_its_path(tmp_path: Path) -> None:
    home = tmp_path / "x\n\x1b[31mRED"
    done = swarm(home, "--home", str(home), "ticket", "create", "--title", "t", "--agent", "echo")
    assert done.returncode == 0, done.stderr
    note = f"note: created a new, empty store at {tmp_path}/x\\x0a\\x1b[31mRED/tickets.db\n"
    assert done.stderr == note, done.stderr


@pytest.mark.parametrize("command", ["[]", '""', '"   "', '[""]'])
def test_a_stored_command_with_no_program_fails_its_tickets_with_one_line(
    home: Path, command: str
) -> None:
    """A row another client wrote is held to the rule `agent register` keeps: its tickets
    are refused at `ticket create` and fail at their claim, with one line, not with
    `/bin/sh: 1: : Permission denied` from inside the sandbox."""
    conn = sqlite3.connect(home / "registry.db", isolation_level=None)
    conn.execute(
        "INSERT INTO agents (name, version, kind, spec) VALUES ('noprog', '1.0.0', 'shell', ?)",
        (f'{{"name": "noprog", "kind": "shell", "command": {command}}}',),
    )
    conn.close()
    created = swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "noprog")
    assert created.returncode == 5, created.stdout + created.stderr
    assert created.stderr.startswith("error: agent noprog@1.0.0 in the registry: spec.command: ")
    assert created.stderr.count("\n") == 1, created.stderr
    insert_open_tickets(home / "tickets.db", [("t", "noprog", "{}")])
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=60,
                 SWARM_POLL_INTERVAL="0.5")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = query(home / "tickets.db", "SELECT status, error FROM tickets")
    assert row["status"] == "failed", row
    assert "spec.command: " in row["error"] and "\n" not in row["error"], row
