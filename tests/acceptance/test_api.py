"""The HTTP API over real HTTP (`swarm-engine serve` on a free port), on SQLite and on
PostgreSQL: every endpoint, the bearer token, bad input answered 4xx with a JSON body,
odd rows shown rather than failed, and /metrics parsed by prometheus_client."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import Target
from tests.support.api import Api, start_api
from tests.support.cli import EXAMPLES, swarm, swarm_inproc, wait_until

TOKEN = "t0ken-for-the-api-tests"


@dataclass
class World:
    home: Path
    target: Target
    api: Api

    def cli(self, *args: str) -> str:
        done = swarm_inproc(self.home, *args, **self.target.env)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """A home with agents, the example workflow and tickets that ran (1: echo, done;
    2: the workflow, done; 3: fail, failed; 4: a draft), served with a token."""
    tmp = tmp_path_factory.mktemp(f"api-{request.param}")
    home = tmp / "home"
    if request.param == "sqlite":
        target = Target("sqlite", home / "tickets.db", {})
    else:
        url = request.getfixturevalue("postgres").create_database()
        target = Target("postgresql", url, {"SWARM_DATABASE_URL": url})
    seed = World(home, target, None)  # type: ignore[arg-type]
    seed.cli("agent", "register", "--all", str(EXAMPLES / "agents"))
    seed.cli("workflow", "register", str(EXAMPLES / "workflows" / "text-report"))
    seed.cli("ticket", "create", "--title", "hi", "--agent", "echo", "--input", "greeting=hello")
    seed.cli("ticket", "create", "--title", "report", "--workflow", "text-report",
             "--description", "one two three")  # fmt: skip
    seed.cli("ticket", "create", "--title", "fails", "--agent", "fail")
    seed.cli("ticket", "create", "--title", "later", "--agent", "echo", "--draft")
    for tid in ("1", "2", "3"):
        swarm_inproc(home, "run-ticket", tid, "--wait", **target.env)
    api = start_api(home, token=TOKEN, **target.env)
    try:
        yield World(home, target, api)
    finally:
        api.stop()


def ok(response: requests.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json()


def refused(response: requests.Response, status: int) -> dict[str, Any]:
    """A 4xx answer with the JSON error body: `error` code, one-line `message`."""
    code = response.status_code
    assert code == status, (code, response.text)
    body: dict[str, Any] = response.json()
    assert isinstance(body["error"], str) and isinstance(body["message"], str), body
    assert "\n" not in body["message"]
    return body


# -- auth -----------------------------------------------------------------------------------
def test_every_route_but_health_needs_the_token(world: World) -> None:
    api = world.api
    for path in ("/v1/tickets", "/v1/tickets/1", "/metrics", "/openapi.json", "/v1/status",
                 "/v1/tickets/1/logs", "/v1/tickets/1/logs/stream", "/v1/agents"):  # fmt: skip
        body = refused(api.get(path, token=None), 401)
        assert body["error"] == "unauthorized" and "bearer token" in str(body["message"])
        refused(api.get(path, token="not-the-token-at-all"), 401)
    refused(api.post("/v1/tickets", token=None, json={"title": "x", "agent": "echo"}), 401)
    assert api.get("/v1/tickets/1", token=None).headers["WWW-Authenticate"] == "Bearer"
    assert ok(api.get("/healthz", token=None)) == {"status": "ok"}
    ok(api.get("/v1/tickets/1"))
    schema = ok(api.get("/openapi.json"))
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_a_server_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = swarm(home, "serve", "--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 2
    assert done.stderr.startswith("error: --host 0.0.0.0 is reachable from other machines")
    assert len(done.stderr.splitlines()) == 1
    short = swarm(home, "serve", "--port", "0", "--token", "short")
    assert short.returncode == 2 and "at least 16 characters" in short.stderr
    done = swarm(home, "serve", "--port", "0", "--token", "")  # `--token "$TYPO"`: not "no token"
    assert done.returncode == 2 and "--token (or SWARM_API_TOKEN) is empty" in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    blank = swarm(home, "serve", "--port", "0", "--token", "   ")  # blank: no client sends it
    assert blank.returncode == 2 and "may hold only printable ASCII" in blank.stderr
    assert len(blank.stderr.splitlines()) == 1, blank.stderr
    done = swarm(home, "serve", "--port", "0", SWARM_API_TOKEN="")
    assert done.returncode == 2 and "is empty" in done.stderr, done.stderr
    api = start_api(home, "--host", "0.0.0.0", token=TOKEN)  # a token: it starts
    try:
        local = Api(api.proc, api.url.replace("0.0.0.0", "127.0.0.1"), TOKEN)
        refused(local.get("/v1/tickets", token=None), 401)
        ok(local.get("/v1/tickets"))
    finally:
        api.stop()
    open_api = start_api(home)  # loopback without a token: open to this machine
    try:
        ok(open_api.get("/v1/tickets", token=None))
    finally:
        open_api.stop()


def test_an_address_in_use_is_one_line(world: World) -> None:
    port = world.api.url.rsplit(":", 1)[1]
    done = swarm(world.home, "serve", "--port", port, **world.target.env)
    assert done.returncode == 2 and done.stderr.startswith(
        f"error: cannot listen on 127.0.0.1:{port}"
    )


# -- tickets --------------------------------------------------------------------------------
def test_create_show_cancel_reopen_open(world: World) -> None:
    api = world.api
    made = ok(api.post("/v1/tickets", json={"title": "api", "agent": "echo",
                                             "inputs": {"greeting": "hi"}, "priority": 3,
                                             "draft": True}), 201)  # fmt: skip
    assert (
        made["status"] == "draft" and made["priority"] == 3 and made["inputs"] == {"greeting": "hi"}
    )
    tid = made["id"]
    shown = ok(api.get(f"/v1/tickets/{tid}"))
    assert (
        shown["title"] == "api"
        and shown["runs"] == []
        and shown["events"][0]["new_status"] == "draft"
    )
    assert ok(api.post(f"/v1/tickets/{tid}/open"))["status"] == "open"
    assert refused(api.post(f"/v1/tickets/{tid}/reopen"), 409)["error"] == "conflict"
    assert ok(api.post(f"/v1/tickets/{tid}/cancel"))["status"] == "cancelled"
    assert "already cancelled" in str(
        refused(api.post(f"/v1/tickets/{tid}/cancel"), 409)["message"]
    )
    refused(api.post(f"/v1/tickets/{tid}/open"), 409)
    assert ok(api.post(f"/v1/tickets/{tid}/reopen"))["status"] == "open"
    events = ok(api.get(f"/v1/tickets/{tid}/events"))
    assert [e["new_status"] for e in events] == ["draft", "open", "cancelled", "open"]
    wf = ok(api.post("/v1/tickets", json={"title": "w", "workflow": "text-report",
                                           "timeout_seconds": 60, "max_attempts": 1}), 201)  # fmt: skip
    assert wf["execution_mode"] == "workflow" and wf["timeout_seconds"] == 60
    ok(api.post(f"/v1/tickets/{wf['id']}/cancel"))
    ok(api.post(f"/v1/tickets/{tid}/cancel"))


def test_the_cli_and_the_api_refuse_alike(world: World) -> None:
    """One rule, one place: both clients get the service's message."""
    body = refused(
        world.api.post("/v1/tickets", json={"title": "x", "agent": "_template:claude-agent"}), 400
    )
    done = swarm_inproc(world.home, "ticket", "create", "--title", "x", "--agent",
                        "_template:claude-agent", **world.target.env)  # fmt: skip
    assert done.returncode == 2 and done.stderr == f"error: {body['message']}\n"
    body = refused(world.api.post("/v1/tickets", json={"title": "x", "agent": "nope"}), 404)
    done = swarm_inproc(world.home, "ticket", "create", "--title", "x", "--agent", "nope",
                        **world.target.env)  # fmt: skip
    assert done.returncode == 3 and done.stderr == f"error: {body['message']}\n"
    assert refused(world.api.post("/v1/tickets", json={"title": "x"}), 400)["message"] == (
        "give exactly one of agent or workflow"
    )


def test_list_filters_and_keyset_pages(world: World) -> None:
    api = world.api
    mine = [ok(api.post("/v1/tickets", json={"title": f"page {i}", "agent": "word-count@1.0.0",
                                             "inputs": {"text": "a"}, "draft": True}), 201)["id"]
            for i in range(5)]  # fmt: skip
    seen: list[int] = []
    cursor = None
    while True:
        page = ok(api.get("/v1/tickets", params={"limit": 2, "agent": "word-count",
                                                 "status": "draft", "cursor": cursor}))  # fmt: skip
        assert len(page["items"]) <= 2
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(mine, reverse=True)  # newest first, each once, only the matches
    both = ok(api.get("/v1/tickets", params=[("status", "done"), ("status", "failed")]))
    assert {t["status"] for t in both["items"]} == {"done", "failed"}
    assert {t["id"] for t in both["items"]} >= {1, 2, 3}
    by_workflow = ok(api.get("/v1/tickets", params={"workflow": "text-report"}))
    assert all(t["workflow_id"] == "text-report" for t in by_workflow["items"])
    assert ok(api.get("/v1/tickets", params={"agent": "word"}))["items"] == []
    ok(api.post("/v1/tickets/bulk/cancel", json={"ids": mine}))


def test_bulk_cancel_and_retry(world: World) -> None:
    api = world.api
    ids = [ok(api.post("/v1/tickets", json={"title": "bulk", "agent": "echo", "draft": True}), 201)["id"]
           for _ in range(3)]  # fmt: skip
    done = ok(api.post("/v1/tickets/bulk/cancel", json={"ids": [*ids, 1, 987654321]}))
    assert done["changed"] == sorted(ids)
    assert done["skipped"] == [{"id": 1, "reason": "already done"},
                               {"id": 987654321, "reason": "does not exist"}]  # fmt: skip
    again = ok(api.post("/v1/tickets/bulk/retry", json={"ids": [ids[0], ids[1], 4]}))
    assert again["changed"] == sorted(ids[:2])
    assert again["skipped"][0]["id"] == 4 and again["skipped"][0]["reason"].startswith("draft")
    rows = world.target.rows(
        "SELECT id, status, attempts FROM tickets WHERE id IN (%(a)s, %(b)s, %(c)s) ORDER BY id",
        a=ids[0], b=ids[1], c=ids[2],
    )  # fmt: skip
    assert [(r["status"], r["attempts"]) for r in rows] == [
        ("open", 0),
        ("open", 0),
        ("cancelled", 0),
    ]
    ok(api.post("/v1/tickets/bulk/cancel", json={"ids": ids}))


# -- runs, steps, logs ----------------------------------------------------------------------
def test_runs_and_steps(world: World) -> None:
    api = world.api
    detail = ok(api.get("/v1/tickets/2"))
    assert detail["status"] == "done" and detail["result"]["words"] == 3
    (run,) = detail["runs"]
    assert [s["step_id"] for s in run["steps"]] == ["count_first", "count_second", "report"]
    assert all(s["attempt"] == 1 and s["status"] == "done" for s in run["steps"])
    assert ok(api.get("/v1/tickets/2/runs"))[0]["id"] == run["id"]
    one = ok(api.get(f"/v1/runs/{run['id']}"))
    assert one["ticket_id"] == 2 and len(one["steps"]) == 3 and one["defects"] == []
    steps = ok(api.get(f"/v1/runs/{run['id']}/steps"))
    assert steps[0]["vm_id"] and steps[0]["duration_ms"] is not None
    recent = ok(api.get("/v1/runs", params={"limit": 3}))
    assert [r["ticket_id"] for r in recent] == [3, 2, 1]
    assert [r["id"] for r in ok(api.get("/v1/runs", params={"workflow": "text-report"}))] == [
        run["id"]
    ]
    assert [r["id"] for r in ok(api.get("/v1/workflows/text-report/runs"))] == [run["id"]]
    failed = ok(api.get("/v1/tickets/3"))
    assert failed["status"] == "failed" and failed["runs"][0]["steps"][0]["exit_code"] == 3


def test_whole_log_download(world: World) -> None:
    got = world.api.get("/v1/tickets/2/logs")
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/plain")
    assert got.headers["content-disposition"].startswith('attachment; filename="ticket-2-run-')
    assert got.text.count("=== run ") == 3 and "· step report · attempt 1 · done ===" in got.text
    cli = swarm_inproc(world.home, "logs", "2", "--step", "report", **world.target.env).stdout
    one = world.api.get("/v1/tickets/2/logs", params={"step": "report"}).text
    assert one.splitlines()[1:] == [line for line in cli.splitlines()[1:] if line]
    refused(world.api.get("/v1/tickets/2/logs", params={"step": "nope"}), 404)
    refused(world.api.get("/v1/tickets/2/logs", params={"run": 99999}), 404)
    assert "has not run yet" in str(refused(world.api.get("/v1/tickets/4/logs"), 404)["message"])


# -- fleet, registry ------------------------------------------------------------------------
def test_vms_engines_hosts_status_usage(world: World) -> None:
    api = world.api
    assert ok(api.get("/v1/vms")) == [] and ok(api.get("/v1/engines")) == []
    assert ok(api.get("/v1/vms", params={"host": "nowhere"})) == []
    assert ok(api.get("/v1/hosts")) == []
    vm_id = ok(api.get("/v1/runs/1/steps"))[0]["vm_id"]
    vm = ok(api.get(f"/v1/vms/{vm_id}"))
    assert vm["state"] == "destroyed" and vm["backend"] == "process"
    refused(api.get("/v1/vms/no-such-vm"), 404)
    status = ok(api.get("/v1/status"))
    assert status["tickets"]["done"] >= 2 and len(status["recent_runs"]) >= 3
    usage = ok(api.get("/v1/usage"))
    assert usage["total"]["cost_usd"] >= 0 and isinstance(usage["by_model"], list)


def test_register_and_show_definitions(world: World) -> None:
    api = world.api
    agent = {"name": "api-hello", "version": "1.5", "kind": "shell",
             "command": "echo hello ${inputs.who}",
             "inputs": {"type": "object", "properties": {"who": {"type": "string"}}}}  # fmt: skip
    made = ok(api.post("/v1/agents", json=agent), 201)
    assert made["name"] == "api-hello" and made["version"] == "1.5"
    assert ok(api.post("/v1/agents", json=agent), 200) == made  # the same: left as is
    other = agent | {"command": "echo bye"}
    assert "already registered" in str(refused(api.post("/v1/agents", json=other), 409)["message"])
    ok(api.post("/v1/agents", params={"force": "true"}, json=agent), 201)
    for builtin in ("echo", "shell", "claude"):  # no version of a built-in's name, forced or not
        taken = agent | {"name": builtin, "version": "2.0.0"}
        for force in ("false", "true"):
            said = refused(api.post("/v1/agents", params={"force": force}, json=taken), 409)
            assert "name of a built-in agent" in said["message"], said
    bad_ref = agent | {"name": "api-bad", "command": "echo ${inputs.nope}"}
    body = refused(api.post("/v1/agents", json=bad_ref), 422)
    assert body["error"] == "invalid_definition"
    assert body["message"].startswith("agent: command: ${inputs.nope}: 'nope' is not declared")
    for wrong, field in (({"name": "Bad Name"}, "name"), ({"name": "x", "kind": "nope"}, "kind"),
                         ({"name": "x", "memory_mb": 1}, "memory_mb"),
                         ({"name": "_template:x"}, "reserved"),
                         ({"name": "x", "output_files": ["a/.."]}, "output_files.0: path 'a/..'"),
                         ({"name": "x", "output_files": ["out/"]}, "names a folder")):  # fmt: skip
        assert field in str(refused(api.post("/v1/agents", json=wrong), 422)["message"])
    assert ok(api.get("/v1/agents/api-hello"))["command"] == "echo hello ${inputs.who}"
    assert ok(api.get("/v1/agents/api-hello@1.5"))["version"] == "1.5"
    names = {(a["name"], a["version"]) for a in ok(api.get("/v1/agents"))}
    assert {("api-hello", "1.5"), ("echo", "1.0.0"), ("word-count", "1.0.0")} <= names
    refused(api.get("/v1/agents/nope"), 404)
    flow = {
        "name": "api-flow",
        "steps": [{"id": "say", "agent": "api-hello", "inputs": {"who": "x"}}],
    }
    assert ok(api.post("/v1/workflows", json=flow), 201)["steps"][0]["agent"] == "api-hello"
    unknown = flow | {"name": "api-flow2", "steps": [{"id": "s", "agent": "ghost"}]}
    assert "unknown agent 'ghost'" in str(
        refused(api.post("/v1/workflows", json=unknown), 422)["message"]
    )
    cycle = {"name": "api-cycle", "steps": [{"id": "a", "agent": "echo", "needs": ["b"]},
                                            {"id": "b", "agent": "echo", "needs": ["a"]}]}  # fmt: skip
    assert "cycle" in str(refused(api.post("/v1/workflows", json=cycle), 422)["message"])
    assert ok(api.get("/v1/workflows/api-flow"))["name"] == "api-flow"
    assert {w["name"] for w in ok(api.get("/v1/workflows"))} >= {"api-flow", "text-report"}
    refused(api.get("/v1/workflows/nope"), 404)
    refused(api.get("/v1/workflows/nope/runs"), 404)
    ticket = ok(
        api.post("/v1/tickets", json={"title": "x", "workflow": "api-flow", "draft": True}), 201
    )
    ok(api.post(f"/v1/tickets/{ticket['id']}/cancel"))


# -- bad input ------------------------------------------------------------------------------
BAD_GETS = [
    ("/v1/tickets/0", 404), ("/v1/tickets/-9223372036854775809", 422), ("/v1/tickets/abc", 422), ("/v1/tickets/18446744073709551616", 422),
    ("/v1/tickets/999999", 404), ("/v1/tickets?limit=0", 422), ("/v1/tickets?limit=5000", 422),
    ("/v1/tickets?status=bogus", 422), ("/v1/tickets?cursor=-9223372036854775809", 422),
    ("/v1/tickets?agent=echo@", 422), ("/v1/tickets?workflow=text-report@", 422),
    ("/v1/agents/echo@", 422), ("/v1/workflows/text-report@", 422),
    ("/v1/tickets?cursor=9223372036854775808", 422), ("/v1/runs/999999", 404),
    ("/v1/runs/999999/steps", 404), ("/v1/runs?workflow=nope", 404), ("/v1/runs?limit=0", 422),
    ("/v1/tickets/999999/runs", 404), ("/v1/tickets/999999/events", 404),
    ("/v1/tickets/999999/logs", 404), ("/v1/tickets/999999/logs/stream", 404),
    ("/v1/tickets/1/logs/stream?run=999999", 404),
    ("/v1/tickets/1/logs/stream?after=-9223372036854775809", 422), ("/v1/runs/-9223372036854775809", 422),
    ("/v1/agents/a%00b", 400), ("/v1/nothing-here", 404),
]  # fmt: skip


def test_bad_requests_get_a_clear_4xx(world: World) -> None:
    api = world.api
    for path, status in BAD_GETS:
        refused(api.get(path), status)
    refused(api.get("/v1/tickets/1/logs/stream", headers={"Last-Event-ID": "abc"}), 400)
    assert refused(api.call("DELETE", "/v1/tickets/1"), 405)["error"] == "method_not_allowed"
    bodies = [
        ('{"title": "x", "agent": ', 422),  # not JSON
        ("[]", 422),
        ('{"title": "x", "agent": "echo", "extra": 1}', 422),
        ('{"title": "x\\u0000", "agent": "echo"}', 400),
        ('{"title": "\\ud800", "agent": "echo"}', 400),  # (a lone surrogate)
        ('{"title": "x", "agent": "echo", "inputs": {"n": NaN}}', 400),
        ('{"title": "x", "agent": "echo", "inputs": {"\\u0000": 1}}', 400),
        ('{"title": "x", "agent": "echo", "inputs": ' + "[" * 3000 + "]" * 3000 + "}", 400),
        ('{"title": "x", "agent": "echo", "inputs": {"a": ' + "[" * 100 + "]" * 100 + "}}", 400),
        ('{"title": "x", "agent": "echo", "priority": 9223372036854775808}', 422),
        ('{"title": "x", "agent": "echo", "timeout_seconds": 0}', 422),
        ('{"title": "x", "agent": "echo", "max_attempts": 0}', 422),
        ('{"title": "x", "agent": "echo", "workflow": "text-report"}', 400),
    ]
    for text, status in bodies:
        body = refused(api.post("/v1/tickets", data=text,
                                headers={"Content-Type": "application/json"}), status)  # fmt: skip
        assert body["message"], text
    big = {"title": "x", "agent": "echo", "inputs": {"blob": "x" * (3 * 1024 * 1024)}}
    assert refused(api.post("/v1/tickets", json=big), 413)["error"] == "payload_too_large"
    for ids in ([], [-(2**63) - 1], [2**63], list(range(1, 1003)), ["a"]):
        refused(api.post("/v1/tickets/bulk/cancel", json={"ids": ids}), 422)
    refused(api.post("/v1/agents", data="[1]", headers={"Content-Type": "application/json"}), 422)
    refused(api.post("/v1/agents", json={"name": "deep", "config": {"a": [[[[[[]]]]]] * 2,
                                                                   "b": "\u0000"}}), 400)  # fmt: skip


def test_a_body_holding_a_key_twice_is_refused(world: World) -> None:
    """Python keeps the last of two keys, SQLite's `json_extract` the first: a body holding
    one is refused with one line rather than read as either."""
    api = world.api
    before = ok(api.get("/v1/tickets?limit=1000"))["items"]
    for path, text, key in (
        ("/v1/tickets", '{"title": "x", "agent": "echo", "inputs": {"a": 1, "a": 2}}', "a"),
        ("/v1/tickets", '{"title": "x", "title": "y", "agent": "echo"}', "title"),
        ("/v1/agents", '{"name": "dup", "command": "true", "env": {"A": "1", "A": "2"}}', "A"),
        ("/v1/workflows", '{"name": "dup", "steps": [], "steps": []}', "steps"),
    ):
        body = refused(api.post(path, data=text, headers={"Content-Type": "application/json"}),
                       422)  # fmt: skip
        assert body["error"] == "invalid_request", body
        assert body["message"] == f'body: duplicate key "{key}"', body
    assert ok(api.get("/v1/tickets?limit=1000"))["items"] == before  # nothing was made
    refused(api.get("/v1/agents/dup"), 404)


def test_odd_rows_are_shown_not_failed(world: World) -> None:
    """Rows are untrusted input: what an outside writer stored past the documented types
    comes back with `defects` naming the field, never as a server error."""
    if world.target.dialect != "sqlite":
        pytest.skip("PostgreSQL enforces the column types, so such rows cannot exist there")
    world.target.sql(
        "PRAGMA ignore_check_constraints = ON;"
        "INSERT INTO tickets (id, title, status, agent_id, inputs, priority, created_at)"
        " VALUES (900001, x'ff41', 'weird', 'echo', '[1]', 'high', 'yesterday');"
        "INSERT INTO workflow_runs (id, ticket_id, attempt, attempt_id, execution_mode, status,"
        " duration_ms, cost_usd, started_at) VALUES (900001, 900001, 'one', 'odd-1', 'single',"
        " 'running', 'slow', 'free', 'soon');"
        "INSERT INTO step_executions (id, run_id, step_id, agent_name, agent_version, agent_kind,"
        " status, exit_code, outputs, duration_ms) VALUES (900001, 900001, 'main', 'echo', '1',"
        " 'echo', 'done', 'x', '{\"a\": 1}', -5);"
        "INSERT INTO vms (id, backend, host, owner_pid, state, memory_mb) VALUES"
        " ('odd-vm', 'process', 'odd-host', 'x', 'busy', 'big');"
    )
    try:
        ticket = ok(world.api.get("/v1/tickets/900001"))
        assert ticket["status"] == "weird" and ticket["priority"] == 0
        assert any(d.startswith("priority:") for d in ticket["defects"])
        step = ticket["runs"][0]["steps"][0]
        assert step["exit_code"] is None and any("exit_code" in d for d in step["defects"])
        run = ok(world.api.get("/v1/runs/900001"))
        assert run["duration_ms"] is None and run["attempt"] is None
        assert {d.split(":")[0] for d in run["defects"]} >= {"duration_ms", "cost_usd", "attempt"}
        listed = ok(world.api.get("/v1/tickets", params={"limit": 1}))
        assert listed["items"][0]["id"] == 900001
        vm = next(v for v in ok(world.api.get("/v1/vms")) if v["id"] == "odd-vm")
        assert vm["memory_mb"] is None and vm["owner_pid"] is None
        assert any(h["host"] == "odd-host" for h in ok(world.api.get("/v1/hosts")))
        ok(world.api.get("/v1/status"))
        assert world.api.get("/v1/tickets/900001/logs").status_code == 200
        assert world.api.get("/metrics").status_code == 200
    finally:
        world.target.sql(
            "DELETE FROM vms WHERE id = 'odd-vm'; DELETE FROM step_executions WHERE id = 900001;"
            "DELETE FROM workflow_runs WHERE id = 900001; DELETE FROM tickets WHERE id = 900001;"
        )


def test_timestamps_python_cannot_hold_are_shown_not_failed(world: World) -> None:
    """PostgreSQL holds `infinity`, `-infinity`, year 294276 and BC dates; SQLite holds
    what its date functions read before year 1. Python's datetime holds neither: such a
    row made GET /v1/tickets answer 422 for everyone while it existed. The row is shown,
    with a defect naming the column, in every table."""
    far, minus, bc = (
        ("'294276-12-31'", "'-infinity'", "'4713-01-01 BC'")
        if world.target.dialect == "postgresql"
        else ("'0000-06-01'", "1e300", "'-0001-01-01'")
    )
    world.target.sql(
        "INSERT INTO tickets (id, title, status, agent_id, created_at, updated_at)"
        f" VALUES (900002, 'far', 'done', 'echo', {far}, {far});"
        "INSERT INTO workflow_runs (id, ticket_id, attempt, attempt_id, execution_mode, status,"
        f" started_at) VALUES (900002, 900002, 1, 'far-1', 'single', 'done', {minus});"
        "INSERT INTO step_executions (id, run_id, step_id, agent_name, agent_version,"
        " agent_kind, status, queued_at) VALUES (900002, 900002, 'main', 'echo', '1', 'echo',"
        f" 'done', {bc});"
        "INSERT INTO vms (id, backend, host, owner_pid, state, created_at) VALUES"
        f" ('far-vm', 'process', 'far-host', 1, 'busy', {bc});"
    )
    try:
        listed = ok(world.api.get("/v1/tickets", params={"limit": 100}))
        [item] = [t for t in listed["items"] if t["id"] == 900002]
        assert item["created_at"] is None and any(
            d.startswith("created_at:") for d in item["defects"]
        ), item
        ticket = ok(world.api.get("/v1/tickets/900002"))
        assert {d.split(":")[0] for d in ticket["defects"]} >= {"created_at", "updated_at"}
        step = ticket["runs"][0]["steps"][0]
        assert any(d.startswith("queued_at:") for d in step["defects"]), step
        run = ok(world.api.get("/v1/runs/900002"))
        assert any(d.startswith("started_at:") for d in run["defects"]), run
        vm = next(v for v in ok(world.api.get("/v1/vms")) if v["id"] == "far-vm")
        assert any(d.startswith("created_at:") for d in vm["defects"]), vm
        for path in ("/v1/runs", "/v1/status", "/v1/hosts", "/v1/usage", "/metrics",
                     "/v1/tickets/900002/events", "/v1/tickets/900002/runs"):  # fmt: skip
            assert world.api.get(path).status_code == 200, path
        for args in (("ticket", "list"), ("ticket", "show", "900002"), ("status",)):
            assert "created_at" in world.cli(*args) or args[0] == "status"
    finally:
        world.target.sql(
            "DELETE FROM vms WHERE id = 'far-vm'; DELETE FROM step_executions WHERE id = 900002;"
            "DELETE FROM workflow_runs WHERE id = 900002; DELETE FROM tickets WHERE id = 900002;"
        )


# -- metrics --------------------------------------------------------------------------------
def metrics_of(api: Api) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    got = api.get("/metrics")
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(got.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics(world: World) -> None:
    target, api = world.target, world.api
    # a lease the reclaimer takes back, and a step that used the model API
    target.sql(
        "UPDATE tickets SET status = 'running', attempt_id = 'gone-1', engine_id = 'gone',"
        " lease_expires_at = '2000-01-01T00:00:00.000Z' WHERE id = 4"
    )
    swarm_inproc(world.home, "cleanup", **target.env)
    target.sql(
        "INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, execution_mode, status)"
        " VALUES (1, 9, 'usage-1', 'single', 'done')"
    )
    target.sql(
        "INSERT INTO step_executions (run_id, step_id, agent_name, agent_version, agent_kind,"
        " status, input_tokens, output_tokens, cache_read_input_tokens, cost_usd, duration_ms)"
        " SELECT id, 'main', 'claude', '1.0.0', 'claude', 'done', 100, 50, 7, 0.25, 1500"
        " FROM workflow_runs WHERE attempt_id = 'usage-1'"
    )
    # move time in the database: rows are counted once settled (10 s old)
    if target.dialect == "sqlite":
        target.sql(
            "UPDATE ticket_events SET at = strftime('%Y-%m-%dT%H:%M:%fZ', at, '-1 hour');"
            "UPDATE step_executions SET queued_at = strftime('%Y-%m-%dT%H:%M:%fZ', queued_at, '-1 hour')"
        )
    else:
        target.sql(
            "UPDATE ticket_events SET at = at - interval '1 hour';"
            "UPDATE step_executions SET queued_at = queued_at - interval '1 hour'"
        )
    stored = {r["status"]: r["n"] for r in target.rows(
        "SELECT status, count(*) AS n FROM tickets GROUP BY status")}  # fmt: skip

    def finished() -> int:
        return int(target.rows(
            "SELECT count(*) AS n FROM step_executions WHERE duration_ms >= 0"
            " AND status NOT IN ('queued', 'running')"
        )[0]["n"])  # fmt: skip

    def counts_match() -> dict[str, dict[tuple[tuple[str, str], ...], float]] | None:
        # a step another test of this module left running may end meanwhile: the store is
        # read on both sides of the scrape, and only a scrape that saw it still is judged
        before = finished()
        got = metrics_of(api)  # ticket counts are cached for 5 s
        tickets = {dict(k)["status"]: v for k, v in got["swarm_tickets"].items() if v}
        steps = got["swarm_step_duration_seconds_count"][()]
        return got if tickets == stored and before == steps == finished() else None

    got = wait_until(counts_match, 15, "ticket and step counts to match the store")
    claims = target.rows(
        "SELECT count(*) AS n FROM ticket_events WHERE old_status = 'open' AND new_status = 'claimed'"
    )[0]["n"]
    assert got["swarm_dispatch_latency_seconds_count"][()] == claims >= 3
    buckets = got["swarm_dispatch_latency_seconds_bucket"]
    assert buckets[(("le", "+Inf"),)] == claims
    assert got["swarm_step_duration_seconds_count"][()] >= 5
    assert got["swarm_lease_reclaims_total"][()] >= 1
    tokens = got["swarm_agent_tokens_total"]
    model = "claude-sonnet-4-6"
    assert tokens[(("kind", "input"), ("model", model))] == 100
    assert tokens[(("kind", "output"), ("model", model))] == 50
    assert tokens[(("kind", "cache_read_input"), ("model", model))] == 7
    assert got["swarm_agent_cost_usd_total"][(("model", model),)] == 0.25
    assert "swarm_vm_slots" not in got or all(v >= 0 for v in got["swarm_vm_slots"].values())
    usage = ok(api.get("/v1/usage"))
    assert usage["by_model"] == [{"model": model, "input_tokens": 100, "output_tokens": 50,
                                  "cache_creation_input_tokens": 0,
                                  "cache_read_input_tokens": 7, "cost_usd": 0.25}]  # fmt: skip
    again = metrics_of(api)  # counted once, however often scraped
    assert again["swarm_agent_cost_usd_total"] == got["swarm_agent_cost_usd_total"]
    assert again["swarm_step_duration_seconds_count"] == got["swarm_step_duration_seconds_count"]


def test_implausible_usage_spoils_no_total(world: World) -> None:
    """Step rows any client wrote with usage no real run reaches (2**63-1 tokens, 1e308
    USD, a duration of 2**63-1 ms; records.py: over 2**40, 1e6 USD, 366 days) are left
    out of `/metrics` and `/v1/usage`, counted as left out there, and their own read names
    the defect: the totals move by the one plausible step written with them, and stay
    exact JSON integers."""
    target, api = world.target, world.api
    model = "claude-sonnet-4-6"
    tokens = ("swarm_agent_tokens_total", (("kind", "input"), ("model", model)))
    count = "swarm_step_duration_seconds_count"

    def value(got: dict[str, dict[Any, float]], name: str, labels: Any = ()) -> float:
        return got.get(name, {}).get(labels, 0.0)

    [ended] = target.rows(  # the steps already there, once counted, are the baseline
        "SELECT count(*) AS n FROM step_executions WHERE status NOT IN ('queued', 'running')"
    )

    def settled() -> dict[str, dict[Any, float]] | None:
        got = metrics_of(api)
        return got if value(got, count) >= ended["n"] else None

    before = wait_until(settled, 30, "the steps already there to be counted")

    most = 2**63 - 1
    target.sql(
        "INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, execution_mode, status)"
        " VALUES (1, 10, 'usage-huge', 'single', 'done')"
    )
    target.sql(
        "INSERT INTO step_executions (run_id, step_id, agent_name, agent_version, agent_kind,"
        " status, input_tokens, output_tokens, cost_usd, duration_ms)"
        f" SELECT id, 'huge', 'claude', '1.0.0', 'claude', 'done', {most}, {2**40 + 1},"
        f" 1e308, {most} FROM workflow_runs WHERE attempt_id = 'usage-huge'"
        " UNION ALL"
        " SELECT id, 'fine', 'claude', '1.0.0', 'claude', 'done', 1, 0, 0.125, 2000"
        " FROM workflow_runs WHERE attempt_id = 'usage-huge'"
    )
    older = (
        "UPDATE step_executions SET queued_at = strftime('%Y-%m-%dT%H:%M:%fZ', queued_at,"
        " '-1 hour') WHERE step_id IN ('huge', 'fine')"
        if target.dialect == "sqlite"
        else "UPDATE step_executions SET queued_at = queued_at - interval '1 hour'"
        " WHERE step_id IN ('huge', 'fine')"
    )
    target.sql(older)

    def counted() -> dict[str, dict[Any, float]] | None:
        got = metrics_of(api)
        return got if value(got, count) >= value(before, count) + 1 else None

    got = wait_until(counted, 15, "the new steps to be counted")
    assert value(got, count) == value(before, count) + 1
    total = "swarm_step_duration_seconds_sum"
    assert value(got, total) - value(before, total) == pytest.approx(2.0)
    assert value(got, *tokens) == value(before, *tokens) + 1
    output = ("swarm_agent_tokens_total", (("kind", "output"), ("model", model)))
    assert value(got, *output) == value(before, *output)
    cost = ("swarm_agent_cost_usd_total", (("model", model),))
    assert value(got, *cost) == pytest.approx(value(before, *cost) + 0.125)
    left_out = "swarm_step_usage_left_out_total"  # the one huge step, counted as left out
    assert value(got, left_out) == value(before, left_out) + 1
    usage = ok(api.get("/v1/usage"))
    assert usage["left_out_steps"] == value(got, left_out)
    for row in [usage["total"], *usage["by_model"]]:
        assert all(0 <= row[k] <= 2**53 - 1 for k in row if k.endswith("_tokens"))
        assert 0 <= row["cost_usd"] < 1e6
    [run] = target.rows("SELECT id FROM workflow_runs WHERE attempt_id = 'usage-huge'")
    steps = {s["step_id"]: s for s in ok(api.get(f"/v1/runs/{run['id']}/steps"))}
    huge = steps["huge"]
    assert (huge["input_tokens"], huge["output_tokens"], huge["cost_usd"]) == (None, None, None)
    assert huge["duration_ms"] is None
    assert {d.split(":")[0] for d in huge["defects"]} == {
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "duration_ms",
    }
    assert all("implausible" in d for d in huge["defects"])
    assert steps["fine"]["defects"] == []


@pytest.mark.parametrize(
    ("sig", "named"),
    [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C"), (signal.SIGHUP, "SIGHUP")],
)
def test_a_stop_signal_stops_the_server_saying_so(
    tmp_path: Path, sig: signal.Signals, named: str
) -> None:
    """SIGTERM (a service manager's stop), SIGINT (Ctrl-C in its terminal) and SIGHUP (its
    terminal closed) end `serve` with exit 0 and one line: SIGTERM used to kill it (exit
    143) without a word, SIGHUP too (exit -1), and Ctrl-C said `error: aborted` with exit
    130, where docs/api.md promised the line."""
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    api = start_api(home)
    assert api.get("/v1/tickets").status_code == 200
    api.proc.send_signal(sig)
    api.proc.wait(timeout=30)
    said = api.stop()  # (it has ended: what it said)
    assert api.proc.returncode == 0, said
    assert said.rstrip().splitlines()[-1] == (
        f"API stopped ({named}): open requests were given their time to end"
    ), said
    assert "error" not in said and "Traceback" not in said, said


def test_post_tickets_answers_413_for_any_body_over_2_mib_before_the_inputs_cap(
    world: World,
) -> None:
    """docs/api.md said `POST /v1/tickets` answers 400 for inputs over 8 MiB; any body over
    2 MiB is answered 413 first, so inputs of 2 to 8 MiB (which the CLI takes) get 413.
    A title or a description over its cap fits in a body: those get their 400 line."""
    api = world.api
    before = ok(api.get("/v1/tickets?limit=1000"))["items"]
    title = {"title": "t" * (64 * 1024 + 1), "agent": "echo"}
    assert refused(api.post("/v1/tickets", json=title), 400)["message"] == (
        "title: 65,537 bytes of text, more than the 64 KiB it may hold"
    )
    described = {"title": "x", "agent": "echo", "description": "d" * (1024 * 1024 + 1)}
    assert refused(api.post("/v1/tickets", json=described), 400)["message"] == (
        "description: 1,048,577 bytes of text, more than the 1 MiB it may hold"
    )
    inputs = {"title": "x", "agent": "echo", "inputs": {"blob": "x" * (4 * 1024 * 1024)}}
    big = refused(api.post("/v1/tickets", json=inputs), 413)  # under the 8 MiB of inputs
    assert (big["error"], big["message"]) == (
        "payload_too_large",
        "the request body is over 2048 KiB (the limit)",
    )
    assert ok(api.get("/v1/tickets?limit=1000"))["items"] == before  # nothing was made
