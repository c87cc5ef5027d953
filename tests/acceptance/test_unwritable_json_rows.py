"""JSON that decodes to something no writer can encode again stays that ticket's (or that
definition's) problem: a lone surrogate escape (`\\udcff`) is shown as U+FFFD, JSON nested
deeper than the store reads (`MAX_READ_DEPTH`) is a defect; every API route, dashboard page
and `--json` command still answers, whoever wrote the row (any SQLite client, or an agent's
$SWARM_OUTPUTS)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.support.api import Api, start_api
from tests.support.cli import swarm, swarm_inproc

from swarm_engine.records import MAX_READ_DEPTH

SURROGATE = '{"a":"\\udcff","\\ud800":["x\\udfff"]}'


def nested(depth: int) -> str:
    return '{"x":' + '{"a":' * depth + "0" + "}" * (depth + 1)


def write_rows(home: Path) -> None:
    tickets = sqlite3.connect(home / "tickets.db")
    with tickets:
        for tid, inputs, result in [(100, SURROGATE, SURROGATE), (101, nested(255), None),
                                    (102, nested(300), nested(900)), (103, nested(990), None)]:  # fmt: skip
            tickets.execute(
                "INSERT INTO tickets (id, title, status, agent_id, inputs, result)"
                " VALUES (?, 'odd json', 'done', 'echo', ?, ?)",
                (tid, inputs, result),
            )
        for rid, tid, outputs in [
            (1, 100, SURROGATE),
            (2, 101, nested(255)),
            (3, 102, nested(600)),
        ]:
            tickets.execute(
                "INSERT INTO workflow_runs (id, ticket_id, attempt, attempt_id, execution_mode,"
                " status, inputs, outputs) VALUES (?, ?, 1, ?, 'single', 'done', ?, ?)",
                (rid, tid, f"a{rid}", outputs, outputs),
            )
            tickets.execute(
                "INSERT INTO step_executions (run_id, step_id, agent_name, agent_version,"
                " agent_kind, status, inputs, outputs) VALUES (?, 'main', 'echo', '1.0.0',"
                " 'echo', 'done', ?, ?)",
                (rid, outputs, outputs),
            )
    tickets.close()
    registry = sqlite3.connect(home / "registry.db")
    with registry:
        spec = json.loads(
            registry.execute("SELECT spec FROM agents WHERE name = 'echo'").fetchone()[0]
        )
        for version, text in [
            ("9.0.0", json.dumps({**spec, "version": "9.0.0", "command": "echo \udcff"})),
            ("9.0.1", json.dumps({**spec, "version": "9.0.1", "env": {"X": "\ud800"}})),
            (
                "9.0.2",
                json.dumps({**spec, "version": "9.0.2"})[:-1] + ',"config":' + nested(300) + "}",
            ),
        ]:
            registry.execute(
                "INSERT INTO agents (name, version, kind, spec) VALUES ('odd', ?, 'echo', ?)",
                (version, text),
            )
        registry.execute(
            "INSERT INTO workflows (name, version, spec) VALUES ('odd', '1.0.0', ?)",
            ('{"name":"odd","version":"1.0.0","variables":' + nested(300) + "}",),
        )
        registry.execute(
            "INSERT INTO workflows (name, version, spec) VALUES ('odd', '1.0.1', ?)",
            ('{"name":"odd","version":"1.0.1","description":"\\udcff"}',),
        )
    registry.close()


@pytest.fixture
def api(home: Path) -> Iterator[Api]:
    write_rows(home)
    server = start_api(home)
    yield server
    server.stop()


def test_every_route_and_page_answers(api: Api) -> None:
    for path in [
        "/v1/tickets", "/v1/tickets?status=done", "/v1/status", "/v1/runs", "/v1/agents",
        "/v1/workflows", "/v1/runs/1", "/v1/runs/1/steps", "/v1/runs/2", "/v1/runs/3/steps",
        *(f"/v1/tickets/{t}" for t in (100, 101, 102, 103)),
        *(f"/v1/tickets/{t}/runs" for t in (100, 101, 102)),
        "/ui", "/ui/tickets/rows", "/ui/fleet", "/ui/fleet/table",
        *(f"/ui/tickets/{t}" for t in (100, 101, 102, 103)),
        *(f"/ui/tickets/{t}/runs" for t in (100, 101, 102)),
    ]:  # fmt: skip
        got = api.get(path)
        assert got.status_code == 200, (path, got.status_code, got.text[:300])
        if path.startswith("/v1/"):
            got.json()
    ticket = api.get("/v1/tickets/100").json()
    assert ticket["inputs"] == {"a": "\ufffd", "\ufffd": ["x\ufffd"]} == ticket["result"]
    assert ticket["runs"][0]["outputs"]["a"] == "\ufffd"
    assert ticket["runs"][0]["steps"][0]["outputs"]["a"] == "\ufffd"
    deep = api.get("/v1/tickets/102").json()
    assert deep["inputs"] == {} and deep["result"] is None
    assert f"inputs: JSON nested deeper than {MAX_READ_DEPTH} levels" in deep["defects"]
    agents = {a["version"]: a for a in api.get("/v1/agents").json() if a["name"] == "odd"}
    assert agents["9.0.0"]["spec"]["command"] == "echo \ufffd"
    assert agents["9.0.1"]["spec"]["env"] == {"X": "\ufffd"}
    assert agents["9.0.2"]["spec"] is None and agents["9.0.2"]["defects"]
    assert not any(line.startswith("Traceback") for line in api.lines)


def test_every_json_command_answers(home: Path) -> None:
    write_rows(home)
    for args in [("ticket", "list", "--json"), ("status", "--json"), ("agent", "list", "--json"),
                 *(("ticket", "show", str(t), "--json") for t in (100, 101, 102, 103))]:  # fmt: skip
        done = swarm_inproc(home, *args)
        assert done.returncode == 0, (args, done.stderr)
        json.loads(done.stdout)


def test_an_agent_writing_a_lone_surrogate_ends_done_and_is_readable(
    home: Path, tmp_path: Path
) -> None:
    write_agent(
        tmp_path / "odd",
        """\
        name: odd-out
        kind: shell
        command: printf '{"x":"\\\\ud800"}' > $SWARM_OUTPUTS
        """,
    )
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "odd")).returncode == 0
    made = swarm_inproc(home, "ticket", "create", "--agent", "odd-out", "--title", "t")
    assert made.returncode == 0, made.stderr
    done = swarm(home, "run-ticket", made.stdout.split()[1], "--wait", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["status"] == "done" and out["result"]["x"] == "\ufffd", out
    server = start_api(home)
    try:
        assert server.get("/v1/tickets").status_code == 200
    finally:
        server.stop()


def strict(text: str) -> object:
    """Parse as a strict JSON reader does: `Infinity`, `-Infinity` and `NaN` are refused."""

    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def write_numbers(home: Path) -> None:
    """Numbers no strict JSON reader takes: costs and sizes of 1e400 (SQLite's infinity),
    costs that sum past the largest float."""
    tickets = sqlite3.connect(home / "tickets.db")
    with tickets:
        tickets.executescript(
            "INSERT INTO tickets (id, title, status, agent_id) VALUES (100, 't', 'done', 'echo');"
            "INSERT INTO workflow_runs (id, ticket_id, attempt, attempt_id, execution_mode,"
            " status, cost_usd) VALUES (1, 100, 1, 'a1', 'single', 'done', 1e308),"
            " (2, 100, 2, 'a2', 'single', 'done', 1e308), (3, 100, 3, 'a3', 'single', 'done', 1e400);"
            "INSERT INTO step_executions (run_id, step_id, agent_name, agent_version, agent_kind,"
            " status, cost_usd) VALUES (3, 'main', 'echo', '1', 'echo', 'done', -1e400);"
            "INSERT INTO engines (id, kind, host, pid, state, max_vms, backend)"
            " VALUES ('e1', 'daemon', 'h', 1, 'running', 1e400, 'process');"
            "INSERT INTO vms (id, backend, host, owner_pid, state, memory_mb)"
            " VALUES ('v1', 'process', 'h', 1, 'busy', 1e400);"
        )
    tickets.close()


def test_json_out_of_numbers_beyond_json_is_strict(home: Path) -> None:
    write_numbers(home)
    for args in [("status", "--json"), ("ticket", "show", "100", "--json"),
                 ("ticket", "list", "--json")]:  # fmt: skip
        done = swarm_inproc(home, *args)
        assert done.returncode == 0, (args, done.stderr)
        strict(done.stdout)
    shown = swarm_inproc(home, "ticket", "show", "100", "--json")
    runs = {r["id"]: r for r in strict(shown.stdout)["runs"]}  # type: ignore[index]
    assert runs[3]["cost_usd"] is None and runs[1]["cost_usd"] is None  # (1e308: implausible)
    table = swarm_inproc(home, "status").stdout + swarm_inproc(home, "ticket", "show", "100").stdout
    assert "$inf" not in table and "$-inf" not in table and "$1.0000e+308" not in table
    server = start_api(home)
    try:
        for path in ["/v1/status", "/v1/runs", "/v1/runs/3", "/v1/runs/3/steps",
                     "/v1/tickets/100", "/v1/tickets/100/runs", "/v1/hosts", "/v1/engines",
                     "/v1/vms", "/v1/usage", "/v1/tickets"]:  # fmt: skip
            got = server.get(path)
            assert got.status_code == 200, (path, got.text[:300])
            strict(got.text)
        page = server.get("/ui/tickets/100").text
        assert "$inf" not in page and "$-inf" not in page and "$1.0000e+308" not in page
    finally:
        server.stop()
