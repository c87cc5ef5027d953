"""A NUL character in what a client hands `ticket create` (inputs, their keys, the
description) is refused with one line before anything is written, on SQLite and
PostgreSQL alike (PostgreSQL's text and jsonb cannot hold one; a ticket SQLite kept but
PostgreSQL refused would make the two stores disagree)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import Target
from tests.support.cli import swarm


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--inputs-json", '{"text": "a\\u0000b"}'], "error: inputs.text contains a NUL character"),
        (["--inputs-json", '{"k\\u0000": 1}'], "error: inputs: key 'k\\x00' contains a NUL"),
        (["--inputs-json", '{"deep": [{"x": "\\u0000"}]}'], "error: inputs.deep"),
    ],
)
def test_a_nul_in_a_new_ticket_is_one_line_and_writes_nothing(
    store_target: Target, tmp_path: Path, extra: list[str], said: str
) -> None:
    home = tmp_path / "home"
    made = swarm(home, "ticket", "create", "--agent", "echo", "--title", "ok", **store_target.env)
    assert made.returncode == 0, made.stderr
    args = ["ticket", "create", "--agent", "echo", "--title", "t", *extra]
    done = swarm(home, *args, **store_target.env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(said), done.stderr
    assert [r["title"] for r in store_target.rows("SELECT title FROM tickets")] == ["ok"]
