"""`agent list` and `workflow list` flag the rows that read fine yet can never run (an
agent of an unknown kind; a workflow whose steps name an agent that is not registered, a
template or an agent of an unknown kind) in a `cannot run` column, and `--json` gives
each row's `cannot_run` (registry/runnable.py). The rows are written with sqlite3, as any
client may write them; a list of runnable definitions reads as it always did."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from tests.support.cli import swarm_inproc

from swarm_engine.registry import Registry


def write(home: Path, table: str, name: str, version: str = "1.0.0", **spec: Any) -> None:
    """A registry row as any SQLite client writes it (an agent's kind column: its spec's)."""
    row: dict[str, Any] = {"name": name, "version": version}
    body = json.dumps({"name": name, "version": version, **spec})
    conn = sqlite3.connect(home / "registry.db", isolation_level=None)
    if table == "agents":
        row["kind"] = spec.get("kind", "shell")
    row["spec"] = body
    conn.execute(
        f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
        tuple(row.values()),
    )
    conn.close()


def steps(*agents: str) -> list[dict[str, str]]:
    return [{"id": f"s{i}", "agent": a} for i, a in enumerate(agents)]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    done = swarm_inproc(home, "status", "--init")
    assert done.returncode == 0, done.stderr
    write(home, "agents", "good", kind="shell", command="true")
    write(home, "agents", "odd", kind="nosuch", command="true")
    write(home, "agents", "dual", "1.0.0", kind="echo")
    write(home, "agents", "dual", "2.0.0", kind="gone")  # the latest: of no kind
    return home


WORKFLOWS = {
    "w-good": (steps("good", "echo", "dual@1.0.0", "echo@1.0.0"), None),
    "w-ghost": (steps("good", "ghost"), "unknown agent 'ghost'"),
    "w-template": (steps("_template:claude-code"), "agent '_template:claude-code' is a template"),
    "w-odd": (steps("odd"), "agent 'odd': unknown kind 'nosuch'"),
    "w-latest": (steps("dual"), "agent 'dual': unknown kind 'gone'"),
    "w-version": (steps("good@9.9.9"), "unknown agent 'good@9.9.9'"),
    "w-builtin": (steps("echo@2.0.0"), "unknown agent 'echo@2.0.0'"),
    "w-empty": ([], "no steps"),
    "w-nosteps": ("three", "no list of steps (see workflow show)"),
}


def table_rows(text: str) -> dict[str, str]:
    """The lines of a table by their first two words, name@version (the header and rule
    left out), each a line of its own."""
    lines = text.splitlines()
    assert all(line == line.rstrip() for line in lines), text  # no trailing spaces
    rows = {"@".join(line.split()[:2]): line for line in lines[2:]}
    assert len(rows) == len(lines) - 2, text  # one line a row
    return rows


def test_agent_list_flags_an_agent_of_an_unknown_kind(home: Path) -> None:
    done = swarm_inproc(home, "agent", "list")
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0]
    assert header.split()[:6] == ["name", "version", "kind", "built", "in", "cannot"], header
    rows = table_rows(done.stdout)
    assert rows["odd@1.0.0"].endswith("unknown kind 'nosuch'"), rows["odd@1.0.0"]
    assert rows["dual@2.0.0"].endswith("unknown kind 'gone'"), rows["dual@2.0.0"]
    for fine in ("good@1.0.0", "dual@1.0.0", "echo@1.0.0", "_template:claude-code@1.0.0"):
        assert "unknown" not in rows[fine] and "unreadable" not in rows[fine], rows[fine]

    listed = json.loads(swarm_inproc(home, "agent", "list", "--json").stdout)
    why = {(d["name"], d["version"]): d["cannot_run"] for d in listed}
    assert why[("odd", "1.0.0")] == "unknown kind 'nosuch'"
    assert why[("dual", "2.0.0")] == "unknown kind 'gone'"
    assert why[("good", "1.0.0")] is None and why[("dual", "1.0.0")] is None
    assert why[("echo", "1.0.0")] is None and why[("_template:claude-code", "1.0.0")] is None


def test_workflow_list_flags_steps_that_name_agents_that_cannot_run(home: Path) -> None:
    for name, (its_steps, _) in WORKFLOWS.items():
        write(home, "workflows", name, steps=its_steps)
    done = swarm_inproc(home, "workflow", "list")
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0].split()
    assert header[:5] == ["name", "version", "steps", "cannot", "run"], header
    rows = table_rows(done.stdout)
    assert sorted(rows) == sorted(f"{name}@1.0.0" for name in WORKFLOWS)
    for name, (its_steps, why) in WORKFLOWS.items():
        count = len(its_steps) if isinstance(its_steps, list) else "?"
        line = rows[f"{name}@1.0.0"]
        assert line.split() == [name, "1.0.0", str(count), *(why or "").split()], line

    listed = json.loads(swarm_inproc(home, "workflow", "list", "--json").stdout)
    assert {d["name"]: d["cannot_run"] for d in listed} == {
        name: why for name, (_, why) in WORKFLOWS.items()
    }
    assert all("step_agents" not in d for d in listed)
    for name, (_, why) in WORKFLOWS.items():  # the list says what `workflow show` finds
        if why is None or "unknown kind" not in why:  # (`show` does not look at kinds)
            shown = swarm_inproc(home, "workflow", "show", name)
            assert (shown.returncode == 0) == (why is None), (name, shown.stderr)


def test_a_list_of_runnable_definitions_reads_as_before(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    write(home, "agents", "good", kind="shell", command="true")
    write(home, "workflows", "w", steps=steps("good", "echo"))
    agents = swarm_inproc(home, "agent", "list").stdout
    workflows = swarm_inproc(home, "workflow", "list").stdout
    assert "cannot run" not in agents and "cannot run" not in workflows
    assert workflows.splitlines()[0].split() == ["name", "version", "steps", "description"]
    assert table_rows(workflows)["w@1.0.0"].split() == ["w", "1.0.0", "2"]


def test_a_page_of_workflows_reads_the_agents_its_steps_name_once(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(30):
        write(home, "workflows", f"w{i:02}", steps=steps("good", f"ghost{i}", "dual", "echo"))
    registry = Registry(home / "registry.db", home / "packages")
    reads: list[list[str]] = []
    named = registry.defs.agents_named

    def counted(names: list[str]) -> Any:
        reads.append(names)
        return named(names)

    def never(*_: Any) -> Any:
        raise AssertionError("an agent read one at a time")

    monkeypatch.setattr(registry.defs, "agents_named", counted)
    monkeypatch.setattr(registry.defs, "agent", never)
    monkeypatch.setattr(registry.defs, "versions", never)
    try:
        page = registry.workflows(limit=10, specs=False, flagged=True)
    finally:
        registry.close()
    assert len(page.items) == 10 and len(reads) == 1
    assert sorted(reads[0]) == sorted({"good", "dual", *(f"ghost{i}" for i in range(10))})
    assert all(d["cannot_run"] == f"unknown agent 'ghost{i}'" for i, d in enumerate(page.items))


def test_show_notes_an_unknown_kind_on_stderr_and_keeps_the_definition(home: Path) -> None:
    """`agent show` / `workflow show` of a definition whose agent kind is unknown print the
    definition as ever (stdout, exit 0) and say on stderr why it cannot run; a runnable one
    says nothing more."""
    for name, spec in WORKFLOWS.items():
        write(home, "workflows", name, steps=spec[0])
    odd = swarm_inproc(home, "agent", "show", "odd", "--json")
    assert odd.returncode == 0, odd.stderr
    assert json.loads(odd.stdout)["kind"] == "nosuch"
    assert odd.stderr.startswith("note: this agent cannot run: unknown kind 'nosuch' (this")
    assert "echo" in odd.stderr and len(odd.stderr.splitlines()) == 1, odd.stderr
    latest = swarm_inproc(home, "workflow", "show", "w-latest")
    assert latest.returncode == 0, latest.stderr
    assert "agent: dual" in latest.stdout, latest.stdout
    said = "note: this workflow cannot run: agent 'dual': unknown kind 'gone'"
    assert latest.stderr.startswith(said), latest.stderr
    for args in (("agent", "show", "good"), ("workflow", "show", "w-good")):
        fine = swarm_inproc(home, *args)
        assert (fine.returncode, fine.stderr) == (0, ""), (args, fine.stderr)
