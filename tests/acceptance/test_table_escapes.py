"""Tables show stored text as `ticket show` does: every control character as its escape
(`\\x0a`, `\\x0d`, `\\x1b`), spaces as they are. A title holding a newline and spaces
shown as `line1 FAKE done` could pass for another row; `line1\\x0aFAKE  done` cannot."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Target
from tests.support.cli import swarm_inproc

TITLE = "line1\nFAKE  done  forged\x1b[31mred\rcr"
SHOWN = "line1\\x0aFAKE  done  forged\\x1b[31mred\\x0dcr"
ERROR = "boom\n  at  line 2"
WORKFLOW = "h-ver@9\n9"


def sql_text(target: Target, text: str) -> str:
    """`text` as a SQL expression, its control characters made with char()/chr()."""
    make = "char" if target.dialect == "sqlite" else "chr"
    parts = []
    for c in text:
        parts.append(f"{make}({ord(c)})" if ord(c) < 32 else "'" + c.replace("'", "''") + "'")
    return " || ".join(parts)


def test_ticket_list_escapes_as_ticket_show_does(store_target: Target, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**store_target.env, "COLUMNS": "400"}
    assert swarm_inproc(home, "status", "--init", **env).returncode == 0
    title, error, workflow = (sql_text(store_target, t) for t in (TITLE, ERROR, WORKFLOW))
    store_target.sql(
        "INSERT INTO tickets (title, status, agent_id, error) VALUES"
        f" ({title}, 'failed', 'echo', {error})"
    )
    store_target.sql(
        "INSERT INTO tickets (title, status, execution_mode, workflow_id) VALUES"
        f" ('wf', 'draft', 'workflow', {workflow})"
    )
    shown = swarm_inproc(home, "ticket", "show", "1", **env)
    assert shown.returncode == 0 and SHOWN in shown.stdout, shown.stdout
    listed = swarm_inproc(home, "ticket", "list", **env)
    assert listed.returncode == 0, listed.stderr
    assert SHOWN in listed.stdout, listed.stdout
    assert "boom\\x0a  at  line 2" in listed.stdout, listed.stdout
    assert "workflow:h-ver@9\\x0a9" in listed.stdout, listed.stdout
    assert "\r" not in listed.stdout and "\x1b" not in listed.stdout
    assert len(listed.stdout.splitlines()) == 4, listed.stdout  # header, rule, two rows
