"""`NAME@` (an empty version after the `@`) names nothing: every reference refuses it with
one line, exit 5, whether the name is a built-in agent's, a registered one's or a
workflow's; a hand-written row whose version is `''` is named by its name alone and
fails with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import Target
from tests.support.cli import EXAMPLES, sqlite_shell, swarm_inproc


def registry_sql(home: Path, target: Target, statement: str) -> None:
    """Write to the registry as an outside client: its own file in SQLite, the store's
    database in PostgreSQL."""
    if target.dialect == "sqlite":
        sqlite_shell(home / "registry.db", statement)
    else:
        target.sql(statement)


def line_of(home: Path, target: Target, *args: str) -> str:
    done = swarm_inproc(home, *args, **target.env)
    assert done.returncode == 5, (args, done.returncode, done.stdout, done.stderr)
    assert done.stdout == "" and done.stderr.count("\n") == 1, (args, done.stderr)
    return done.stderr.strip()


def test_name_at_nothing_is_refused_everywhere(store_target: Target, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = store_target.env
    for args in (
        ("agent", "register", "--all", str(EXAMPLES / "agents")),
        ("workflow", "register", str(EXAMPLES / "workflows" / "text-report")),
    ):
        done = swarm_inproc(home, *args, **env)
        assert done.returncode == 0, done.stdout + done.stderr
    for ref, args in (
        ("word-count@", ("ticket", "create", "--title", "t", "--agent", "word-count@")),
        ("echo@", ("ticket", "create", "--title", "t", "--agent", "echo@")),
        ("text-report@", ("ticket", "create", "--title", "t", "--workflow", "text-report@")),
        ("word-count@", ("agent", "show", "word-count@")),
        ("echo@", ("agent", "show", "echo@")),
        ("text-report@", ("workflow", "show", "text-report@")),
        ("text-report@", ("workflow", "runs", "text-report@")),
    ):
        line = line_of(home, store_target, *args)
        assert line == (
            f"error: {ref!r} has no version after '@' (write NAME for the latest version,"
            " or NAME@VERSION)"
        ), (args, line)
    assert store_target.rows("SELECT count(*) AS n FROM tickets") == [{"n": 0}]
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "workflow.yaml").write_text("name: w\nsteps:\n  - {id: a, agent: 'word-count@'}\n")
    line = line_of(home, store_target, "workflow", "register", str(folder))
    assert line.endswith("workflow.yaml: step 'a': agent 'word-count@' has no version after"
                         " '@' (write NAME for the latest version, or NAME@VERSION)"), line  # fmt: skip


@pytest.mark.parametrize("table", ["agents", "workflows"])
def test_a_row_whose_version_is_empty_fails_with_one_line(
    store_target: Target, tmp_path: Path, table: str
) -> None:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", **store_target.env).returncode == 0
    if table == "agents":
        spec = '{"name": "blank", "version": "", "kind": "echo"}'
        registry_sql(home, store_target, "INSERT INTO agents (name, version, kind, spec)"
                         f" VALUES ('blank', '', 'echo', '{spec}')")  # fmt: skip
        args = ("ticket", "create", "--title", "t", "--agent", "blank")
    else:
        spec = '{"name": "blank", "version": "", "steps": [{"id": "a", "agent": "echo"}]}'
        registry_sql(
            home,
            store_target,
            f"INSERT INTO workflows (name, version, spec) VALUES ('blank', '', '{spec}')",
        )
        args = ("ticket", "create", "--title", "t", "--workflow", "blank")
    what = table[:-1]
    line = line_of(home, store_target, *args)
    assert line.startswith(f"error: {what} blank@ in the registry: spec.version: "), line
    line = line_of(home, store_target, what, "show", "blank")
    assert line.startswith(f"error: {what} blank@ in the registry: spec.version: "), line
    listed = swarm_inproc(home, what, "list", **store_target.env)
    assert listed.returncode == 0 and "blank" in listed.stdout, listed.stdout + listed.stderr
