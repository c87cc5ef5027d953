"""`agent show` and `workflow show` print a definition whose text is one unbroken token of a
mebibyte whole, as YAML that reads back to the definition, with no control character
reaching the terminal and no markup taken as markup (Rich's highlighting took time that
grows with the square of such a token: 80,000 characters, 77 s; a mebibyte, hours). The
views of tickets with such values end too. The 60 s timeouts are hang guards, not
measures of speed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import yaml
from tests.acceptance.conftest import write_agent, write_workflow
from tests.support.cli import swarm

TOKEN = 1_000_000  # with the rest of the file, just under the 1 MiB a definition may hold
HANG_GUARD = 60.0


def test_agent_show_prints_a_mebibyte_token_whole_as_yaml(home: Path, tmp_path: Path) -> None:
    description = "\x1b[31m[bold]" + "d" * TOKEN
    write_agent(
        tmp_path / "long",
        'name: long\nversion: 1.0.0\nkind: shell\ncommand: "true"\n'
        f'description: "\\e[31m[bold]{"d" * TOKEN}"\n',
    )
    swarm(home, "agent", "register", str(tmp_path / "long"), check=True)
    done = swarm(home, "agent", "show", "long", timeout=HANG_GUARD, check=True)
    assert "\x1b" not in done.stdout
    shown = yaml.safe_load(done.stdout)
    assert shown["description"] == description  # whole, unwrapped, markup kept as text
    as_json = swarm(home, "agent", "show", "long", "--json", timeout=HANG_GUARD, check=True)
    assert shown == json.loads(as_json.stdout)
    listed = swarm(home, "agent", "list", timeout=HANG_GUARD, check=True).stdout
    assert "\\x1b[31m[bold]ddd" in listed and "\x1b" not in listed  # escaped, cut to a line


def test_workflow_show_prints_a_mebibyte_variable_whole(home: Path, tmp_path: Path) -> None:
    write_workflow(
        tmp_path / "wf",
        f'name: wf\nversion: 1.0.0\ndescription: "[red]{"w" * 20_000}"\n'
        f'variables:\n  v: "{"v" * TOKEN}"\n'
        'steps:\n  - id: a\n    agent: echo\n    inputs: {x: "${variables.v}"}\n',
    )
    swarm(home, "workflow", "register", str(tmp_path / "wf"), check=True)
    done = swarm(home, "workflow", "show", "wf", timeout=HANG_GUARD, check=True)
    shown = yaml.safe_load(done.stdout)
    assert shown["variables"] == {"v": "v" * TOKEN}
    assert shown["description"] == "[red]" + "w" * 20_000
    listed = swarm(home, "workflow", "list", timeout=HANG_GUARD, check=True).stdout
    assert "[red]www" in listed  # the description, cut to one line


def test_ticket_views_of_mebibyte_tokens_end_and_say_the_cut(home: Path) -> None:
    conn = sqlite3.connect(home / "tickets.db", timeout=30, isolation_level=None)
    try:
        cur = conn.execute(
            "INSERT INTO tickets (title, description, status, agent_id, inputs, error)"
            " VALUES (?, ?, 'failed', 'echo', ?, ?)",
            ("T" * 60_000, "D" * TOKEN, json.dumps({"x": "q" * TOKEN}), "\x1b]0;E" + "E" * TOKEN),
        )
        ticket_id = str(cur.lastrowid)
    finally:
        conn.close()
    shown = swarm(home, "ticket", "show", ticket_id, timeout=HANG_GUARD, check=True).stdout
    assert "\x1b" not in shown
    assert "… (60,000 characters)" in shown  # the title, cut on its line
    assert "more characters: --json shows all of it" in shown  # the fields, cut at 256 KiB
    listed = swarm(home, "ticket", "list", timeout=HANG_GUARD, check=True).stdout
    assert "TTT" in listed and "\x1b" not in listed
    assert swarm(home, "status", timeout=HANG_GUARD, check=True).returncode == 0
