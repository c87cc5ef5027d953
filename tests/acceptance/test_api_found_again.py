"""What a fresh tester found in the API, again: a 405 lists the path's methods in
`Allow` and every GET route answers HEAD; a tokenless server parses `Host` strictly;
request bodies are strictly typed (no `"5"` for a number, no `"yes"` for a boolean)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import Target
from tests.support.api import Api, start_api
from tests.support.cli import swarm, swarm_inproc

from swarm_engine.api.deps import MAX_LOG_STREAMS

TOKEN = "a-token-of-16-chars-or-more"


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    return home


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    server = start_api(_home(tmp_path), token=TOKEN)
    yield server
    server.stop()


@pytest.fixture
def tokenless(tmp_path: Path) -> Iterator[Api]:
    server = start_api(_home(tmp_path))
    yield server
    server.stop()


def test_a_405_lists_the_paths_methods(api: Api) -> None:
    for method, path, allowed in [
        ("PUT", "/v1/tickets/1", "GET, HEAD"),
        ("DELETE", "/v1/tickets", "GET, HEAD, POST"),
        ("GET", "/v1/tickets/1/cancel", "POST"),
        ("POST", "/v1/status", "GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
        ("PUT", "/ui", "GET, HEAD"),
        ("POST", "/ui/static/dashboard.css", "GET, HEAD"),
    ]:
        answer = api.call(method, path)
        assert answer.status_code == 405, (method, path, answer.text)
        assert answer.headers["Allow"] == allowed, (method, path)
        assert answer.json()["error"] == "method_not_allowed"


def test_every_get_route_answers_head(api: Api) -> None:
    made = api.post("/v1/tickets", json={"title": "t", "agent": "echo"})
    assert made.status_code == 201, made.text
    tid = made.json()["id"]
    for path in ("/v1/status", "/v1/tickets", f"/v1/tickets/{tid}", "/v1/hosts", "/healthz",
                 "/metrics", "/ui", "/ui/static/dashboard.css", "/openapi.json"):  # fmt: skip
        got, head = api.get(path), api.call("HEAD", path)
        assert head.status_code == got.status_code == 200, (path, head.status_code)
        assert head.content == b"", path
        assert head.headers["Content-Type"] == got.headers["Content-Type"], path
    assert api.call("HEAD", "/v1/tickets/999999").status_code == 404
    assert api.call("HEAD", "/v1/tickets/1", token=None).status_code == 401
    # a live log stream: HEAD answers its headers at once and holds no stream slot
    for _ in range(MAX_LOG_STREAMS + 2):
        head = api.call("HEAD", f"/v1/tickets/{tid}/logs/stream", timeout=10)
        assert head.status_code == 200 and head.headers["Content-Type"].startswith(
            "text/event-stream"
        )
    assert api.get("/v1/tickets").status_code == 200
    assert "Traceback" not in "".join(api.lines) and "failed" not in "".join(api.lines)


@pytest.mark.parametrize(
    "token", ["\u00e9" * 16, " " * 16, "a-token-of-16\nchars", "a-token-of-16\tchars", "\u00a0" * 16,
              "a-token-of-16-chars\x7f"],
)  # fmt: skip
@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_token_no_client_can_send_is_refused_at_start(
    tmp_path: Path, token: str, how: str
) -> None:
    home = tmp_path / "home"
    if how == "option":
        done = swarm(home, "serve", "--port", "0", "--token", token, timeout=30)
    else:
        done = swarm(home, "serve", "--port", "0", timeout=30, SWARM_API_TOKEN=token)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: --token (or SWARM_API_TOKEN) may hold only printable")
    assert len(done.stderr.splitlines()) == 1
    assert not home.exists()  # refused before the home is made


def test_a_tokenless_server_reads_host_strictly(tokenless: Api) -> None:
    for host in ("[::1]evil", "[::1]:80@evil", "[::1]:80evil", "[::1", "[::1]:", "[::1]:8a",
                 "[::1]]", "[::1%25lo]", "[::1%lo]:80", "[127.0.0.1]", "[localhost]", "::1",
                 "127.0.0.1]", "127.0.0.1:", "127.0.0.1:80:80", "127.0.0.1:80@evil",
                 "localhost.", "localhost:٨٠", "127.1", "[::ffff:7f00:1]",
                 "evil@127.0.0.1"):  # fmt: skip
        answer = tokenless.get("/v1/status", headers={"Host": host.encode()})
        assert answer.status_code == 403, (host, answer.status_code)
        assert answer.json()["error"] == "forbidden" and "Host" in answer.json()["message"]
    for host in ("[::1]", "[::1]:8080", "[0:0:0:0:0:0:0:1]:1", "localhost", "LocalHost:1",
                 "127.0.0.1:65535", "127.9.9.9"):  # fmt: skip
        assert tokenless.get("/v1/status", headers={"Host": host}).status_code == 200, host


@pytest.mark.parametrize(
    ("field", "value"),
    [("priority", True), ("priority", "5"), ("priority", 5.0), ("priority", 5.5),
     ("draft", "yes"), ("draft", 1), ("draft", "true"), ("max_attempts", "3"),
     ("max_attempts", False), ("timeout_seconds", "10"), ("timeout_seconds", True),
     ("title", 5), ("description", 1.5), ("agent", ["echo"]), ("inputs", "a=b"),
     ("inputs", [["a", "b"]])],
)  # fmt: skip
def test_a_new_tickets_fields_are_strictly_typed(api: Api, field: str, value: object) -> None:
    answer = api.post("/v1/tickets", json={"title": "t", "agent": "echo", "draft": True,
                                           field: value})  # fmt: skip
    assert answer.status_code == 422, (field, value, answer.text)
    body = answer.json()
    assert body["error"] == "invalid_request" and f"body.{field}" in body["message"]
    assert "\n" not in body["message"]
    assert api.get("/v1/tickets").json()["items"] == []  # nothing was made


def test_strict_fields_take_their_own_types(api: Api) -> None:
    made = api.post("/v1/tickets", json={"title": "t", "agent": "echo", "draft": True,
                                         "priority": -5, "max_attempts": 2,
                                         "timeout_seconds": 10, "inputs": {"n": "1"}})  # fmt: skip
    assert made.status_code == 201, made.text
    ticket = made.json()
    assert (ticket["priority"], ticket["max_attempts"], ticket["status"]) == (-5, 2, "draft")
    for ids in (["1"], [True], [1.0]):
        answer = api.post("/v1/tickets/bulk/cancel", json={"ids": ids})
        assert answer.status_code == 422 and "body.ids.0" in answer.json()["message"], ids
    assert api.get(f"/v1/tickets/{ticket['id']}").json()["status"] == "draft"
    cancelled = api.post("/v1/tickets/bulk/cancel", json={"ids": [ticket["id"]]})
    assert cancelled.status_code == 200, cancelled.text


def test_a_negative_max_vms_is_a_defect_not_slots(store_target: Target, tmp_path: Path) -> None:
    """An outside writer's `engines.max_vms = -5` adds no slot to its host (a defect of
    the host says so) and is shown null with a defect on the engine, not as -5."""
    home = tmp_path / "home"
    done = swarm_inproc(home, "status", "--init", **store_target.env)
    assert done.returncode == 0, done.stderr
    store_target.sql(
        "INSERT INTO engines (id, host, pid, max_vms, backend) VALUES"
        " ('e-bad', 'h1', 1, -5, 'x'), ('e-good', 'h1', 2, 4, 'x'), ('e-alone', 'h2', 3, -5, 'x')"
    )
    server = start_api(home, token=TOKEN, **store_target.env)
    try:
        hosts = {h["host"]: h for h in server.get("/v1/hosts").json()}
        assert (hosts["h1"]["slots"], hosts["h2"]["slots"], hosts["h2"]["free"]) == (4, 0, 0)
        for name in ("h1", "h2"):
            assert any("negative max_vms" in d for d in hosts[name]["defects"]), hosts[name]
        engines = {e["id"]: e for e in server.get("/v1/engines").json()}
        assert engines["e-bad"]["max_vms"] is None
        assert "max_vms: negative (-5)" in engines["e-bad"]["defects"]
        assert engines["e-good"]["max_vms"] == 4 and not engines["e-good"]["defects"]
        status = server.get("/v1/status").json()
        assert {h["host"]: h["slots"] for h in status["hosts"]} == {"h1": 4, "h2": 0}
        assert all(e["max_vms"] != -5 for e in status["engines"])
        metrics = server.get("/metrics").text
        assert "-5" not in metrics.split("swarm_vm_slots", 1)[1].split("# HELP", 1)[0]
    finally:
        server.stop()


def test_a_huge_max_vms_is_a_defect_not_slots(store_target: Target, tmp_path: Path) -> None:
    """An outside writer's `engines.max_vms` of 2**63-1 (or, in SQLite, a REAL inf) adds no
    slot to its host, with a defect of the host, instead of 2**63-1 free slots: no engine
    runs more than 1024 VMs."""
    home = tmp_path / "home"
    done = swarm_inproc(home, "status", "--init", **store_target.env)
    assert done.returncode == 0, done.stderr
    huge = ["9223372036854775807"] + (["9e999"] if store_target.dialect == "sqlite" else [])
    rows = [f"('e-huge{i}', 'h1', {i + 10}, {value}, 'x')" for i, value in enumerate(huge)]
    store_target.sql(
        "INSERT INTO engines (id, host, pid, max_vms, backend) VALUES"
        f" {', '.join(rows)}, ('e-good', 'h1', 2, 4, 'x'), ('e-max', 'h2', 3, 1024, 'x')"
    )
    server = start_api(home, token=TOKEN, **store_target.env)
    try:
        hosts = {h["host"]: h for h in server.get("/v1/hosts").json()}
        assert (hosts["h1"]["slots"], hosts["h1"]["free"]) == (4, 4)
        assert hosts["h1"]["defects"] == [
            f"slots: {len(huge)} engine(s) with a max_vms over 1024 (the most an engine runs),"
            " counted as 0"
        ]
        assert hosts["h2"]["slots"] == 1024 and not hosts["h2"].get("defects")
        status = server.get("/v1/status").json()
        assert {h["host"]: h["slots"] for h in status["hosts"]} == {"h1": 4, "h2": 1024}
    finally:
        server.stop()
