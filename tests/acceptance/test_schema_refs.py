"""An agent's `inputs` schema is data: a `$ref` resolves only within the schema (and the
JSON Schema meta-schemas), never from a URL or a file, at registration or at run time
(docs/security.md). Registration refuses a schema whose reference does not resolve so; a
row holding one (any SQLite client writes the registry) fails its own ticket with one
line, and the engine and the tickets around it go on."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.acceptance.test_daemon import FAST
from tests.support.cli import (
    insert_agent_row,
    insert_open_tickets,
    query,
    start_engine,
    swarm_inproc,
)
from tests.support.listener import Listener

from swarm_engine.models import AgentSpec


@pytest.mark.parametrize(
    "ref",
    ["{url}/s.json", "file:///etc/passwd", "other.json", "#/$defs/missing"],
)
def test_registration_refuses_a_ref_from_outside_the_schema(
    home: Path, tmp_path: Path, ref: str
) -> None:
    with Listener() as ear:
        schema = {"type": "object", "properties": {"x": {"$ref": ref.format(url=ear.url)}}}
        write_agent(tmp_path / "a", f"name: a\nkind: echo\ninputs: {json.dumps(schema)}\n")
        done = swarm_inproc(home, "agent", "register", str(tmp_path / "a"))
    assert done.returncode == 5, done.stdout + done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    assert "inputs.properties.x: not a valid JSON Schema: $ref" in line, line
    assert "does not resolve" in line, line
    assert ear.received == []  # never contacted
    assert query(home / "registry.db", "SELECT 1 FROM agents WHERE name = 'a'") == []


def test_registration_keeps_refs_within_the_schema(home: Path, tmp_path: Path) -> None:
    schema = {
        "$defs": {"word": {"type": "string"}},
        "type": "object",
        "properties": {"x": {"$ref": "#/$defs/word"}, "y": {"$ref": "#/properties/x"}},
    }
    write_agent(tmp_path / "a", f"name: a\nkind: echo\ninputs: {json.dumps(schema)}\n")
    done = swarm_inproc(home, "agent", "register", str(tmp_path / "a"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_row_whose_schema_refers_to_a_url_fails_its_ticket_alone(home: Path) -> None:
    """The tester's `tarpit` row: its `$ref` names a port that accepts and never answers
    (it froze the whole engine), another one a listener that would answer. Nothing
    connects to either; each ticket fails with one line naming the reference; the good
    tickets before and after are done, and an agent whose refs stay within its schema
    runs."""
    tarpit = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody answers
    tarpit_url = f"http://127.0.0.1:{tarpit.getsockname()[1]}"
    with Listener() as ear, tarpit:
        for name, schema in (
            ("tarpit", {"$ref": f"{tarpit_url}/s.json"}),
            ("listener", {"$ref": f"{ear.url}/s.json"}),
            ("fileref", {"properties": {"x": {"$ref": "file:///etc/passwd"}}}),
            ("local", {"$defs": {"n": {"type": "integer"}}, "properties": {"n": {"$ref": "#/$defs/n"}}}),
        ):  # fmt: skip
            insert_agent_row(home, AgentSpec(name=name, kind="echo", inputs=schema))
        db = home / "tickets.db"
        insert_open_tickets(db, [("before", "echo", "{}"), ("tarpit", "tarpit", '{"n": 1}'),
                      ("listener", "listener", "{}"),
                      ("fileref", "fileref", '{"x": 1}'), ("local", "local", '{"n": 2}'),
                      ("bad-local", "local", '{"n": "two"}'), ("after", "echo", "{}")])  # fmt: skip
        proc = start_engine(home, "--max-vms", "2", "--until-idle", **FAST)
        try:
            out, _ = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:  # an engine frozen on the tarpit
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        tarpit.setblocking(False)
        with pytest.raises(BlockingIOError):  # no connection is waiting to be taken
            tarpit.accept()
    assert proc.returncode == 0, out
    assert ear.received == []  # the engine never connected to the schema's URL
    by_title = {t["title"]: t for t in query(db, "SELECT title, status, error FROM tickets")}
    for title in ("before", "local", "after"):
        assert by_title[title]["status"] == "done", by_title[title]
    for title, ref in (
        ("tarpit", f"$ref '{tarpit_url}/s.json'"),
        ("listener", f"$ref '{ear.url}/s.json'"),
        ("fileref", "file:///etc/passwd"),
    ):
        ticket = by_title[title]
        assert ticket["status"] == "failed", ticket
        assert "\n" not in ticket["error"] and "internal error" not in ticket["error"], ticket
        assert ref in ticket["error"] and "does not resolve" in ticket["error"], ticket
    assert by_title["bad-local"]["status"] == "failed"
    assert "'two' is not of type 'integer'" in by_title["bad-local"]["error"]
