"""Bad input of every kind: one clear line on stderr, a documented exit code, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent, write_workflow
from tests.support.cli import query, snapshot, sqlite_shell, swarm, swarm_inproc


@pytest.fixture
def seeded(home: Path, tmp_path: Path) -> Path:
    write_agent(tmp_path / "agents" / "ok", "name: ok\nkind: shell\ncommand: 'true'\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "agents" / "ok")).returncode == 0
    assert swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "ok").returncode == 0
    return home


def unchanged(home: Path, args: list[str], code: int, message: str) -> None:
    before = (snapshot(home / "tickets.db"), snapshot(home / "registry.db"))
    done = swarm_inproc(home, *args)
    after = (snapshot(home / "tickets.db"), snapshot(home / "registry.db"))
    assert done.returncode == code, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert before == after


CYCLE = """
name: loop
steps:
  - {id: a, agent: echo, inputs: {x: "${steps.b.outputs.x}"}}
  - {id: b, agent: echo, needs: [a]}
"""
SELF = "name: me\nsteps:\n  - {id: a, agent: echo, needs: [a]}\n"
UNKNOWN_AGENT = "name: ua\nsteps:\n  - {id: a, agent: ghost}\n"
UNKNOWN_STEP = "name: us\nsteps:\n  - {id: a, agent: echo, needs: [zz]}\n"
DUP = "name: dup\nsteps:\n  - {id: a, agent: echo}\n  - {id: a, agent: echo}\n"
BAD_YAML = "name: [unclosed\nsteps: {\n"


def backward(n: int, *, closed: bool = False) -> str:
    """A workflow of `n` steps where s_i needs s_{i+1} (`closed`: the last needs s0)."""
    steps = [f"  - {{id: s{i}, agent: echo, needs: [s{i + 1}]}}" for i in range(n - 1)]
    steps.append(f"  - {{id: s{n - 1}, agent: echo{', needs: [s0]' if closed else ''}}}")
    return "name: chain\nsteps:\n" + "\n".join(steps) + "\n"


NOT_A_WORKFLOW = "name: x\nsteps: 3\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (CYCLE, "dependency cycle: a -> b -> a"),
        (SELF, "step 'a' depends on itself"),
        (UNKNOWN_AGENT, "unknown agent 'ghost'"),
        (UNKNOWN_STEP, "unknown step 'zz'"),
        (DUP, "duplicate step id 'a'"),
        (BAD_YAML, "invalid YAML"),
        (NOT_A_WORKFLOW, "steps: Input should be a valid list"),
        (backward(1000, closed=True), "dependency cycle: s0 -> s1 -> s2 -> "),
        (backward(1200), "steps: List should have at most 1000 items"),
    ],
    ids=[
        "cycle",
        "self",
        "unknown-agent",
        "unknown-step",
        "dup",
        "bad-yaml",
        "not-a-workflow",
        "backward-1000-cycle",
        "backward-1200",
    ],
)
def test_invalid_workflows_are_refused(
    seeded: Path, tmp_path: Path, text: str, message: str
) -> None:
    folder = write_workflow(tmp_path / "wf", text)
    unchanged(seeded, ["workflow", "register", str(folder)], 5, message)


def test_the_largest_workflow_registers_in_any_order(seeded: Path, tmp_path: Path) -> None:
    folder = write_workflow(tmp_path / "wf", backward(1000))
    done = swarm_inproc(seeded, "workflow", "register", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    for args in (("workflow", "show", "chain"), ("ticket", "create", "--workflow", "chain",
                                                 "--title", "t", "--draft")):  # fmt: skip
        done = swarm_inproc(seeded, *args)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    unchanged(
        seeded,
        ["ticket", "create", "--title", "x", "--workflow", "chain", "--inputs-json",
         '{"variables": [1]}'],
        2,
        "inputs.variables must be a JSON object, not an array",
    )  # fmt: skip


def test_one_bad_workflow_in_a_folder_registers_none(seeded: Path, tmp_path: Path) -> None:
    write_workflow(tmp_path / "many" / "good", "name: good\nsteps:\n  - {id: a, agent: echo}\n")
    write_workflow(tmp_path / "many" / "bad", CYCLE)
    unchanged(seeded, ["workflow", "register", "--all", str(tmp_path / "many")], 5, "cycle")


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("name: Bad Name\nkind: shell\n", "name: must be lowercase letters"),
        ("name: x\nkind: shell\nmemory_mb: -1\n", "memory_mb"),
        ("name: x\nkind: shell\nunknown_key: 1\n", "unknown_key: Extra inputs are not permitted"),
        ("name: x\n  kind: [\n", "invalid YAML"),
        ("name: x\nkind: shell\nenv: {'A=B': v}\n", "env: 'A=B' is not an environment variable"),
    ],
)
def test_invalid_agents_are_refused(
    seeded: Path, tmp_path: Path, yaml_text: str, message: str
) -> None:
    folder = write_agent(tmp_path / "bad", yaml_text)
    unchanged(seeded, ["agent", "register", str(folder)], 5, message)


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_built_in_agents_name_cannot_be_registered_in_another_version(
    seeded: Path, tmp_path: Path, force: list[str]
) -> None:
    """`echo@2.0.0` would be what every ticket naming `echo` runs (the latest version)."""
    folder = write_agent(
        tmp_path / "fake", "name: echo\nversion: 2.0.0\nkind: shell\ncommand: id\n"
    )
    unchanged(seeded, ["agent", "register", *force, str(folder)], 4, "name of a built-in agent")


def test_a_hand_written_row_cannot_take_over_a_built_in_agent(seeded: Path) -> None:
    """The registry is any writer's: a row `echo@2.0.0` (the latest version) and the
    built-in row's own spec rewritten would each make every ticket naming `echo` run
    `echo HIJACKED`. A built-in's name always runs the built-in spec."""
    hijack = '{"name": "echo", "version": "%s", "kind": "shell", "command": "echo HIJACKED"}'
    sqlite_shell(
        seeded / "registry.db",
        "INSERT INTO agents (name, version, kind, description, spec) VALUES"
        f" ('echo', '2.0.0', 'shell', '', '{hijack % '2.0.0'}');"
        f" UPDATE agents SET kind = 'shell', spec = '{hijack % '1.0.0'}'"
        " WHERE name = 'echo' AND version = '1.0.0'",
    )
    made = swarm_inproc(seeded, "ticket", "create", "--title", "e", "--agent", "echo",
                        "--input", "said=mine")  # fmt: skip
    assert made.returncode == 0, made.stderr
    done = swarm_inproc(seeded, "run-ticket", "2", "--wait")
    assert done.returncode == 0 and "HIJACKED" not in done.stdout, done.stdout
    (ticket,) = query(seeded / "tickets.db", "SELECT status, result FROM tickets WHERE id = 2")
    assert ticket["status"] == "done" and "mine" in ticket["result"], ticket
    unchanged(seeded, ["ticket", "create", "--title", "x", "--agent", "echo@2.0.0"], 3,
              "'echo' is a built-in agent's name, whose only version is 1.0.0")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["ticket", "create", "--title", "x", "--agent", "ghost"], 3, "unknown agent 'ghost'"),
        (
            ["ticket", "create", "--title", "x", "--workflow", "ghost"],
            3,
            "unknown workflow 'ghost'",
        ),
        (
            ["ticket", "create", "--title", "x", "--agent", "ok", "--inputs-json", "{bad"],
            2,
            "not valid JSON",
        ),
        (
            ["ticket", "create", "--title", "x", "--agent", "ok", "--inputs-json", "[1]"],
            2,
            "JSON object",
        ),
        (
            ["ticket", "create", "--title", "x", "--agent", "ok", "--input", "novalue"],
            2,
            "KEY=VALUE",
        ),
        (
            [
                "ticket",
                "create",
                "--title",
                "x",
                "--agent",
                "ok",
                "--input",
                "a=1",
                "--input",
                " a =2",
            ],
            2,
            "input 'a' is given twice in --input; give each key once",
        ),
        (
            [
                "ticket",
                "create",
                "--title",
                "x",
                "--agent",
                "ok",
                "--input",
                "a=1",
                "--inputs-json",
                '{"a": 5, "b": 2}',
            ],
            2,
            "input 'a' is given in --input and in --inputs-json; give each key once",
        ),
        (
            [
                "ticket",
                "create",
                "--title",
                "x",
                "--agent",
                "ok",
                "--inputs-json",
                '{"a": 5, "b": {"c": 1, "c": 2}}',
            ],
            2,
            "--inputs-json is not valid JSON: key 'c' is given twice in one object",
        ),
        (["ticket", "create", "--title", "x"], 2, "exactly one of --agent or --workflow"),
        (
            ["ticket", "create", "--title", "x", "--agent", "_template:claude-agent"],
            2,
            "is a template",
        ),
        (["run-ticket", "999", "--wait"], 3, "ticket 999 does not exist"),
        (["ticket", "show", "999"], 3, "ticket 999 does not exist"),
        (["ticket", "cancel", "999"], 3, "ticket 999 does not exist"),
        (["agent", "show", "ghost"], 3, "unknown agent 'ghost'"),
        (["agent", "register", "/nonexistent/agent"], 5, "no such file"),
        (["run-ticket", "1", "--wait", "--backend", "nope"], 2, "'nope' is not one of"),
        (["run-ticket", "1", "--wait", "--backend", ""], 2, "'' is not one of 'process', 'qemu'"),
        (["start", "--foreground", "--backend", "qemu "], 2, "'qemu ' is not one of"),
        (["ticket", "list", "--status", "weird"], 2, "unknown status 'weird'"),
    ],
)
def test_bad_commands_change_nothing(
    seeded: Path, args: list[str], code: int, message: str
) -> None:
    unchanged(seeded, args, code, message)


def test_a_ticket_whose_agent_is_unknown_is_refused_before_the_claim(seeded: Path) -> None:
    sqlite_shell(
        seeded / "tickets.db",
        "INSERT INTO tickets (title, status, agent_id) VALUES ('g', 'open', 'ghost')",
    )
    unchanged(seeded, ["run-ticket", "2", "--wait"], 3, "unknown agent 'ghost'")


def test_a_claimed_ticket_is_refused(seeded: Path) -> None:
    sqlite_shell(
        seeded / "tickets.db", "UPDATE tickets SET status='claimed', engine_id=NULL WHERE id=1"
    )
    unchanged(seeded, ["run-ticket", "1", "--wait"], 4, "ticket 1 is already claimed")


def test_a_finished_ticket_needs_reopen(seeded: Path) -> None:
    assert swarm_inproc(seeded, "run-ticket", "1", "--wait").returncode == 0
    unchanged(seeded, ["run-ticket", "1", "--wait"], 4, "use 'ticket reopen' first")
    assert swarm_inproc(seeded, "ticket", "reopen", "1").returncode == 0
    assert swarm_inproc(seeded, "run-ticket", "1", "--wait").returncode == 0


def test_errors_from_the_real_process_are_one_line(seeded: Path) -> None:
    done = swarm(seeded, "run-ticket", "42", "--wait")
    assert (done.returncode, done.stderr) == (3, "error: ticket 42 does not exist\n")


def test_a_bad_config_file_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.toml").write_text("max_vms = 'lots'\n")
    done = swarm(home, "ticket", "list")
    assert done.returncode == 5 and done.stderr.startswith("error: setting max_vms")
    assert len(done.stderr.splitlines()) == 1  # status, stop, cleanup: test_broken_config.py


def test_a_backend_not_among_the_choices_is_refused_at_load_naming_its_source(
    tmp_path: Path,
) -> None:
    """Every command refuses it (`ticket list` ran on `backend = "qemu "`, and `start`
    said "engine starting" first), naming where it came from."""
    home = tmp_path / "h"
    home.mkdir()
    config = home / "config.toml"
    config.write_text('backend = "qemu "\n')
    for args in (["ticket", "list"], ["start", "--foreground"]):
        done = swarm(home, *args)
        assert done.returncode == 5 and done.stdout == "", (args, done.stdout)
        assert done.stderr == (
            "error: setting backend: Input should be 'process' or 'qemu', not 'qemu ' "
            f"(in config file {config})\n"
        )
    config.unlink()
    done = swarm(home, "ticket", "list", SWARM_BACKEND="nosuch")
    assert done.returncode == 5 and done.stderr.endswith(", not 'nosuch' (in SWARM_BACKEND)\n")


@pytest.mark.parametrize("bad", ["reel.toml", "."], ids=["missing", "a-folder"])
def test_a_swarm_config_that_is_not_a_file_is_refused_like_config(tmp_path: Path, bad: str) -> None:
    home = tmp_path / "h"
    home.mkdir()
    path = (home / bad).resolve()
    by_flag = swarm(home, "--config", str(path), "status")
    by_env = swarm(home, "status", SWARM_CONFIG=str(path))
    what = "does not exist" if bad == "reel.toml" else "is not a file"
    assert (by_flag.returncode, by_flag.stderr) == (5, f"error: config file {path} {what}\n")
    assert (by_env.returncode, by_env.stderr) == (
        5,
        f"error: config file {path} (SWARM_CONFIG) {what}\n",
    )
    assert swarm(home, "status").returncode == 0  # <home>/config.toml may be missing


def test_logs_follow_checks_the_run_and_step_first(seeded: Path) -> None:
    assert swarm_inproc(seeded, "run-ticket", "1", "--wait").returncode == 0
    for follow in ([], ["--follow"]):
        unchanged(seeded, ["logs", "1", *follow, "--run", "999"], 3, "ticket 1 has no run 999")
        unchanged(seeded, ["logs", "1", *follow, "--step", "nope"], 3, "has no step 'nope'")


EMPTY = "is empty; unset it for the default, or give a value"


@pytest.mark.parametrize(
    ("env", "config", "said"),
    [
        ({"SWARM_DATABASE_URL": ""}, "", f"database_url: {EMPTY} (in SWARM_DATABASE_URL)"),
        ({"SWARM_REGISTRY_URL": " "}, "", f"registry_url: {EMPTY} (in SWARM_REGISTRY_URL)"),
        ({"SWARM_TICKETS_DB": ""}, "", f"tickets_db: {EMPTY} (in SWARM_TICKETS_DB)"),
        ({"SWARM_REGISTRY_DB": ""}, "", f"registry_db: {EMPTY} (in SWARM_REGISTRY_DB)"),
        ({}, 'database_url = ""', f"database_url: {EMPTY} (in config file CONFIG)"),
        ({}, 'registry_url = "\\t"', f"registry_url: {EMPTY} (in config file CONFIG)"),
        ({}, 'tickets_db = ""', f"tickets_db: {EMPTY} (in config file CONFIG)"),
        ({"SWARM_HOME": ""}, "", f"home: {EMPTY} (in SWARM_HOME)"),
        ({"SWARM_HOME": "FILE"}, "", "home: FILE is not a folder (in SWARM_HOME)"),
        (
            {},
            'home = "/tmp/elsewhere"',
            "home: not read from a config file; the home is set by SWARM_HOME or --home"
            " (in config file CONFIG)",
        ),
        (
            {"SWARM_LOG_FORMAT": "xml"},
            "",
            "log_format: 'xml' is not one of text, json (in SWARM_LOG_FORMAT)",
        ),
    ],
    ids=lambda v: "-" if not v else None,
)
def test_an_empty_or_unknown_setting_is_refused_before_anything_is_made(
    tmp_path: Path, env: dict[str, str], config: str, said: str
) -> None:
    """Fail closed: an empty database URL (an unset `$PG_URL` on a scale-out host) made a
    new SQLite store in the home and worked that private queue; an empty path setting said
    "database . is a directory"; `SWARM_LOG_FORMAT=xml` and a `home` key in the config file
    were taken without a word. Each is one line naming the setting and its source, exit
    5, and nothing is made."""
    home = tmp_path / "h"
    home.mkdir()
    afile = tmp_path / "afile"
    afile.write_text("")
    config_path = home / "config.toml"
    if config:
        config_path.write_text(config + "\n")
    env = {k: str(afile) if v == "FILE" else v for k, v in env.items()}
    done = swarm(home, "ticket", "create", "--title", "t", "--agent", "echo", **env)
    said = said.replace("CONFIG", str(config_path)).replace("FILE", str(afile))
    assert (done.returncode, done.stdout, done.stderr) == (5, "", f"error: setting {said}\n")
    assert sorted(p.name for p in home.iterdir()) == (["config.toml"] if config else [])
    assert afile.read_text() == ""
