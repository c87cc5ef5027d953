"""Short commands import only what they use (issue 12 item 7): `--version` loads neither
pydantic nor rich nor the package metadata; `status`, `ticket create` and `ticket cancel`
load no engine, VM backend, agent runtime, asyncio, HTTP client or server, and not even
pydantic (plain settings are checked without it, config.py; a plain stored agent
definition too, registry/plain.py).
A behaviour check, read from `sys.modules` of a real command's process; how long start-up
takes is benchmarks/cli_startup.py's business."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import click
import pytest
from tests.support.cli import env_for, swarm

from swarm_engine.cli.main import COMMANDS, cli

PROBE = """
import json, sys
from swarm_engine.cli.main import main
out, args = sys.argv[1], sys.argv[2:]
try:
    main(args)
except SystemExit as exc:
    code = exc.code
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""

NEVER_ON_SHORT_COMMANDS = (
    "asyncio",
    "anthropic",
    "jsonschema",
    "swarm_engine.engine",
    "swarm_engine.agents.claude.agent",
    "swarm_engine.vm.process",
    "swarm_engine.vm.process_vm",
    "swarm_engine.vm.process_argv",
    "swarm_engine.vm.qemu.backend",
    "swarm_engine.vm.qemu.builder",
    "swarm_engine.cli.progress",
    "swarm_engine.cli.daemon",
    "swarm_engine.cli.vm",
    "swarm_engine.cli.registry_cmds",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "anthropic",
    "swarm_engine.api",
    "swarm_engine.gateway.proxy",
)
WITHOUT_PYDANTIC = (
    "pydantic",
    "pydantic_core",
    "swarm_engine.models",
    "swarm_engine.config_model",
    "importlib.metadata",
    "importlib.resources",
)
"""What `status`, `ticket cancel` and `ticket create` of a plain agent need not load: their
settings, store rows, agent definition and output are plain."""


def imported(home: Path, *args: str) -> set[str]:
    """The modules loaded by the time `swarm-engine ARGS` is done (it must exit 0)."""
    out = home.parent / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args],
        env=env_for(home),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["code"] == 0, done.stderr
    return set(report["modules"])


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("imports") / "home"
    swarm(home, "status", "--init", check=True)
    swarm(home, "ticket", "create", "--title", "t", "--agent", "echo", check=True)
    return home


def test_version_loads_no_settings_store_or_output(home: Path) -> None:
    modules = imported(home, "--version")
    heavy = ("rich", "sqlite3", "swarm_engine.config", "swarm_engine.store")
    assert loaded(modules, (*NEVER_ON_SHORT_COMMANDS, *WITHOUT_PYDANTIC, *heavy)) == []


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("ticket", "cancel", "1"),
        ("ticket", "create", "--title", "t", "--agent", "echo"),
    ],
    ids=" ".join,
)
def test_short_commands_load_no_engine_backend_or_agent(home: Path, args: tuple[str, ...]) -> None:
    modules = imported(home, *args)
    assert loaded(modules, (*NEVER_ON_SHORT_COMMANDS, *WITHOUT_PYDANTIC, "yaml")) == []
    if args[0] != "ticket" or args[1] != "create":  # only create reads the registry
        assert loaded(modules, ("swarm_engine.registry",)) == []


@pytest.mark.parametrize("agent", ["echo", "shell", "claude", "claude-code"])
def test_ticket_create_checks_a_plain_built_in_agent_without_pydantic(
    home: Path, agent: str
) -> None:
    modules = imported(home, "ticket", "create", "--title", "t", "--agent", agent, "--draft")
    assert "swarm_engine.registry.plain" in modules
    assert loaded(modules, WITHOUT_PYDANTIC) == []


def test_ticket_create_of_a_definition_that_is_not_plain_asks_the_model(home: Path) -> None:
    """A stored definition the quick check does not vouch for (here, valid: a `config`
    nested deeper than `plain.MAX_DEPTH`) is decided by `AgentSpec`, which pydantic loads
    for."""
    deep: list[object] = []
    for _ in range(40):
        deep = [deep]
    conn = sqlite3.connect(home / "registry.db")
    with conn:
        conn.execute(
            "INSERT INTO agents (name, version, kind, spec) VALUES ('texty', '1.0.0', 'echo', ?)",
            (json.dumps({"name": "texty", "kind": "echo", "config": {"a": deep}}),),
        )
    conn.close()
    modules = imported(home, "ticket", "create", "--title", "t", "--agent", "texty", "--draft")
    assert "swarm_engine.models" in modules and "pydantic" in modules


def test_every_lazy_command_is_the_command_of_that_name() -> None:
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name


def test_the_version_is_the_project_s(home: Path) -> None:
    """`--version` prints `swarm_engine.__version__`, which must be pyproject.toml's."""
    import tomllib

    import swarm_engine

    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    version = tomllib.loads(pyproject.read_text())["project"]["version"]
    assert swarm_engine.__version__ == version
    done = swarm(home, "--version", check=True)
    assert done.stdout == f"swarm-engine, version {version}\n"


def test_the_builtin_refs_are_the_builtin_agents() -> None:
    """The registry skips seeding when it holds `BUILTIN_REFS` (no specs built on open)."""
    from swarm_engine.registry.builtins import BUILTIN_REFS, builtin_agents

    assert {(a.name, a.version) for a in builtin_agents()} == BUILTIN_REFS
