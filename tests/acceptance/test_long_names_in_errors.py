"""A name of any size in a definition (a registry row another client wrote, or a file given
to `register`) makes a ticket fail with one line of at most 500 characters, in every error
column the engine writes, and the readers (`ticket show`, `status`) take the row as sound;
registration refuses such names with one line."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import pytest
from tests.acceptance.conftest import status_of
from tests.support.api import start_api
from tests.support.cli import query, swarm, swarm_inproc

from swarm_engine.store.errortext import MAX_ERROR_CHARS

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}
HUGE = 200_000


def step(step_id: str, agent: str = "echo", **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "agent": agent, "inputs": {}, **fields}


# workflow rows as another client writes them: (name, steps, extra spec fields, the line's start)
WORKFLOW_ROWS: list[tuple[str, list[dict[str, Any]], dict[str, Any], str]] = [
    ("ghost-agent", [step("a", agent="g" * 500_000)], {}, "step 'a': unknown agent 'ggg"),
    ("long-need", [step("a"), step("b", needs=["n" * HUGE])], {},
     "step 'b' references unknown step 'nnn"),
    ("long-output", [step("a"), step("b", inputs={"x": f"${{steps.a.outputs.{'o' * HUGE}}}"})],
     {}, "step 'b': inputs.x: the reference ${steps.a.outputs.ooo"),
    ("long-variable", [step("a", inputs={"x": f"${{variables.{'v' * HUGE}}}"})],
     {"variables": {"v" * HUGE: 1}}, "step 'a': inputs.x: the reference ${variables.vvv"),
    ("long-cycle", [step(f"s{i}", needs=[f"s{(i + 1) % 1000}"]) for i in range(1000)], {},
     "dependency cycle: "),
]  # fmt: skip


def insert_workflow_row(home: Path, name: str, spec: dict[str, Any]) -> None:
    conn = sqlite3.connect(home / "registry.db", timeout=30)
    try:
        with conn:
            conn.execute(
                "INSERT INTO workflows (name, version, spec) VALUES (?, '1.0.0', ?)",
                (name, json.dumps(spec)),
            )
    finally:
        conn.close()


def insert_long_env_agent(home: Path) -> None:
    """An agent row whose `env` names a variable of 300,000 characters."""
    spec = {"name": "envlong", "version": "1.0.0", "kind": "shell", "command": "env | wc -c",
            "env": {"V" * 300_000: "x"}}  # fmt: skip
    conn = sqlite3.connect(home / "registry.db", timeout=30)
    try:
        with conn:
            conn.execute(
                "INSERT INTO agents (name, version, kind, description, spec)"
                " VALUES ('envlong', '1.0.0', 'shell', '', ?)",
                (json.dumps(spec),),
            )
    finally:
        conn.close()


def insert_ticket(home: Path, title: str, **columns: str) -> int:
    conn = sqlite3.connect(home / "tickets.db", timeout=30)
    try:
        with conn:
            names = ", ".join(["title", "status", *columns])
            marks = ", ".join("?" * (2 + len(columns)))
            cur = conn.execute(
                f"INSERT INTO tickets ({names}) VALUES ({marks})",
                (title, "open", *columns.values()),
            )
        assert cur.lastrowid is not None
        return cur.lastrowid
    finally:
        conn.close()


def stored_errors(home: Path) -> list[str]:
    db = home / "tickets.db"
    texts = [
        *query(db, "SELECT error AS e FROM tickets"),
        *query(db, "SELECT error AS e FROM workflow_runs"),
        *query(db, "SELECT error AS e FROM step_executions"),
        *query(db, "SELECT error AS e FROM vms"),
        *query(db, "SELECT note AS e FROM ticket_events"),
    ]
    return [str(t["e"]) for t in texts if t["e"] is not None]


def test_every_long_name_fails_its_ticket_with_one_bounded_line(home: Path) -> None:
    tickets: dict[str, int] = {}
    for name, steps, extra, _ in WORKFLOW_ROWS:  # (`ticket create` refuses them: raw rows)
        insert_workflow_row(home, name, {"name": name, "version": "1.0.0", "steps": steps, **extra})
        tickets[name] = insert_ticket(home, name, workflow_id=name, execution_mode="workflow")
    insert_long_env_agent(home)
    envlong = insert_ticket(home, "envlong", agent_id="envlong")
    # a shell step whose output is long: its error is the clamp's to bound (not a name's)
    long_out = "printf 'x%.0s' $(seq 3000); echo; echo the last line; exit 3"
    done = swarm_inproc(home, "ticket", "create", "--title", "long-out", "--agent", "shell",
                        "--input", f"command={long_out}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    shell_ticket = int(done.stdout.split()[1])
    done = swarm(home, "start", "--foreground", "--until-idle", "--max-vms", "2", timeout=300,
                 **FAST)  # fmt: skip
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr, done.stdout
    rows = {r["id"]: r for r in query(home / "tickets.db", "SELECT id, status, error FROM tickets")}
    for name, _, _, line in WORKFLOW_ROWS:
        got = rows[tickets[name]]
        assert got["status"] == "failed" and line in got["error"], (name, got["error"][:300])
    assert rows[envlong]["status"] == "failed"
    assert "is not an environment variable name" in rows[envlong]["error"], rows[envlong]
    assert status_of(home, shell_ticket) == "failed"
    assert rows[shell_ticket]["error"].endswith("the last line"), rows[shell_ticket]["error"]
    errors = stored_errors(home)
    assert len(errors) >= 2 * len(rows)  # each ticket's error and its failed event's note
    for text in errors:
        assert len(text) <= MAX_ERROR_CHARS and "\n" not in text, (len(text), text[:200])
    for tid in rows:  # the readers take every row as sound: no defect line
        for args in (("ticket", "show", str(tid)), ("ticket", "show", str(tid), "--json")):
            shown = swarm_inproc(home, *args)
            assert shown.returncode == 0, shown.stderr
            assert "bytes of text, more than" not in shown.stdout + shown.stderr, shown.stdout
    shown = swarm_inproc(home, "status")
    assert shown.returncode == 0 and "bytes of text, more than" not in shown.stdout, shown.stdout


def agent_yaml(folder: Path, env_name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "agent.yaml").write_text(
        # (an explicit key: YAML's plain keys stop at 1,024 characters)
        f"name: envname\nversion: 1.0.0\nkind: shell\ncommand: 'true'\nenv:\n  ? {env_name}\n  : x\n"
    )
    return folder


@pytest.mark.parametrize(
    ("env_name", "taken"),
    [("V" * 256, True), ("V" * 257, False), ("V" * 300_000, False), ("1ABC", False)],
)
def test_registration_bounds_an_env_variable_name(
    home: Path, tmp_path: Path, env_name: str, taken: bool
) -> None:
    done = swarm_inproc(home, "agent", "register", str(agent_yaml(tmp_path / "a", env_name)))
    if taken:
        assert done.returncode == 0, done.stderr
        return
    assert done.returncode == 5, done.stderr
    assert "is not an environment variable name" in done.stderr
    assert len(done.stderr) < 500 and done.stderr.count("\n") == 1, done.stderr[:300]


def test_the_api_refuses_a_long_env_variable_name(home: Path) -> None:
    api = start_api(home)
    try:
        body = {"name": "envname", "version": "1.0.0", "kind": "shell", "command": "true",
                "env": {"V" * 300_000: "x"}}  # fmt: skip
        got = api.post("/v1/agents", json=body)
        assert got.status_code == 422, got.text[:300]
        message = got.json()["message"]
        assert "is not an environment variable name" in message
        assert len(message) < 500 and "\n" not in message, message[:300]
    finally:
        api.stop()


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"x": f"${{steps.a.outputs.{'o' * HUGE}}}"}, "characters long, more than the 256"),
        ({"x": f"${{variables.{'v' * 300}}}"}, "characters long, more than the 256"),
        ({"x": "${steps.nope.outputs.k}"}, "references unknown step 'nope'"),
    ],
)
def test_registration_refuses_a_reference_past_the_names_allowed(
    home: Path, tmp_path: Path, inputs: dict[str, str], message: str
) -> None:
    folder = tmp_path / "wf"
    folder.mkdir()
    spec = {"name": "refs", "steps": [step("a"), step("b", inputs=inputs)]}
    (folder / "workflow.yaml").write_text(textwrap.dedent(json.dumps(spec)))
    done = swarm_inproc(home, "workflow", "register", str(folder))
    assert done.returncode == 5 and message in done.stderr, done.stderr[:300]
    assert len(done.stderr) < 500 and done.stderr.count("\n") == 1, done.stderr[:300]
