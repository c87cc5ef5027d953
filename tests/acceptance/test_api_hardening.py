"""What a fresh tester found in the API: a page of tickets is bounded in bytes, a browser
page from another site (by a form, or by DNS rebinding) cannot drive a tokenless loopback
server, live log streams are capped, and a dashboard form of too many fields is a 400."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.api import Api, start_api
from tests.support.cli import swarm_inproc

from swarm_engine.api.dashboard import MAX_FORM_FIELDS
from swarm_engine.api.deps import MAX_LOG_STREAMS


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    server = start_api(home)
    yield server
    server.stop()


def test_a_request_from_another_site_changes_nothing(api: Api) -> None:
    made = api.post("/v1/tickets", json={"title": "t", "agent": "echo", "draft": True})
    assert made.status_code == 201, made.text
    tid = made.json()["id"]
    foreign = api.post(f"/v1/tickets/{tid}/cancel", headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and "another site" in foreign.json()["message"]
    assert api.get(f"/v1/tickets/{tid}").json()["status"] == "draft"
    own = api.url.split("://", 1)[1]
    same = api.post(f"/v1/tickets/{tid}/cancel", headers={"Origin": f"http://{own}"})
    assert same.status_code == 200 and same.json()["status"] == "cancelled"


def test_a_page_of_big_tickets_is_bounded_in_bytes(api: Api) -> None:
    blob = "x" * (1536 * 1024)  # 1.5 MiB of inputs each, under the 2 MiB body limit
    ids = []
    for i in range(8):
        made = api.post("/v1/tickets", json={"title": f"big {i}", "agent": "echo",
                                             "draft": True, "inputs": {"blob": blob}})  # fmt: skip
        assert made.status_code == 201, made.text[:200]
        ids.append(made.json()["id"])
    seen: list[int] = []
    cursor = None
    while True:
        page = api.get("/v1/tickets?limit=50" + (f"&cursor={cursor}" if cursor else ""))
        assert page.status_code == 200
        assert len(page.content) < 12 * 1024 * 1024
        body = page.json()
        seen += [t["id"] for t in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)  # every ticket, over more than one page, once
    assert len(json.dumps(seen)) > 0


def test_a_rebound_page_cannot_reach_a_tokenless_server(api: Api) -> None:
    """DNS rebinding: a page on evil.example, its name now pointing at 127.0.0.1, sends
    `Host: evil.example:PORT` and a matching `Origin`; every request is refused."""
    port = api.url.rsplit(":", 1)[1]
    rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    agent = {"name": "pwn", "kind": "shell", "command": "id"}
    for answer in (
        api.post("/v1/agents", json=agent, headers=rebound),
        api.post("/v1/tickets", json={"title": "t", "agent": "echo"}, headers=rebound),
        api.get("/v1/tickets", headers=rebound),
        api.get("/ui", headers=rebound),
        api.get("/v1/tickets", headers={"Host": "evil.example"}),
        api.get("/v1/tickets", headers={"Host": "127.0.0.1.evil.example"}),
    ):
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"] == "forbidden" and "Host" in answer.json()["message"]
    assert api.get("/v1/tickets").json()["items"] == []
    assert "pwn" not in api.get("/v1/agents").text
    for host in (f"localhost:{port}", "127.0.0.1", f"127.0.0.2:{port}", f"[::1]:{port}"):
        assert api.get("/v1/tickets", headers={"Host": host}).status_code == 200, host


def test_a_server_with_a_token_answers_any_host_that_carries_it(tmp_path: Path) -> None:
    """With a token (needed on 0.0.0.0) `Host` is not checked: the token authenticates."""
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    server = start_api(home, token="a-token-of-16-chars-or-more")
    try:
        host = {"Host": "swarm.example:8080"}
        assert server.get("/v1/tickets", headers=host).status_code == 200
        assert server.get("/v1/tickets", headers=host, token=None).status_code == 401
    finally:
        server.stop()


def _open_stream(api: Api, ticket: int) -> socket.socket:
    """A raw log stream of `ticket`, once the server has answered its first event."""
    host, port = api.url.split("://", 1)[1].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    request = f"GET /v1/tickets/{ticket}/logs/stream HTTP/1.1\r\nHost: {host}\r\n\r\n"
    sock.sendall(request.encode())
    got = b""
    while b"retry: 1000" not in got:
        more = sock.recv(4096)
        assert more and b" 200 " in (got + more)[:20], (got + more)[:200]
        got += more
    return sock


@pytest.fixture
def one_address_api(tmp_path: Path) -> Iterator[Api]:
    """A server that keeps any number of connections from one address (as behind a
    reverse proxy), so that one client here can fill a cap of its own."""
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    server = start_api(home, SWARM_API_MAX_CONNECTIONS_PER_ADDRESS="0")
    yield server
    server.stop()


def test_live_log_streams_are_capped(one_address_api: Api) -> None:
    """Idle streams of a ticket no engine runs: one over the cap is a 503 with
    `Retry-After`, other requests still answer, and a closed stream frees its slot.
    (All from one address: more than `api_max_connections_per_address` of them.)"""
    api = one_address_api
    made = api.post("/v1/tickets", json={"title": "open", "agent": "echo"})
    assert made.status_code == 201, made.text
    tid = made.json()["id"]
    streams = [_open_stream(api, tid) for _ in range(MAX_LOG_STREAMS)]
    try:
        over = api.get(f"/v1/tickets/{tid}/logs/stream")
        assert over.status_code == 503 and over.headers["Retry-After"].isdigit()
        assert over.json()["error"] == "too_many_streams"
        assert str(MAX_LOG_STREAMS) in over.json()["message"]
        assert api.get("/v1/tickets").status_code == 200
        streams.pop().close()
        deadline = time.monotonic() + 30  # the server sees the disconnect, frees the slot
        while True:
            with api.get(f"/v1/tickets/{tid}/logs/stream", stream=True) as again:
                if again.status_code == 200:
                    break
                assert again.status_code == 503 and time.monotonic() < deadline
            time.sleep(0.05)  # sleep-ok: between polls of a condition with a deadline
    finally:
        for sock in streams:
            sock.close()


@pytest.mark.parametrize("action", ["cancel", "create"])
def test_a_dashboard_form_of_too_many_fields_is_a_400(api: Api, action: str) -> None:
    form = "&".join("id=1" for _ in range(MAX_FORM_FIELDS + 1))
    answer = api.post(f"/ui/tickets/{action}", data=form, headers={
        "HX-Request": "true", "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert answer.status_code == 400, answer.text[:200]
    assert f"more than {MAX_FORM_FIELDS} fields" in answer.json()["message"]
    assert "Traceback" not in api.stop()


def test_a_dashboard_form_is_urlencoded_utf8_or_refused(api: Api) -> None:
    """A form whose title is not valid UTF-8 (%-escaped or raw) is refused with one line,
    as the JSON API refuses such a body, never stored with U+FFFD in its place; a
    multipart form (or any other type) is refused by its type, not read as empty."""
    hx = {"HX-Request": "true", "Content-Type": "application/x-www-form-urlencoded"}
    for body in [b"title=a%FF&target=agent+echo", b"title=a\xff&target=agent+echo",
                 b"title=%ED%A0%80&target=agent+echo"]:  # fmt: skip
        answer = api.post("/ui/tickets/create", data=body, headers=hx)
        assert answer.status_code == 400, (body, answer.text[:200])
        assert answer.json()["message"] == "the form is not valid UTF-8 text"
    for kind, body in [("multipart/form-data; boundary=b", b'--b\r\nContent-Disposition:'
                        b' form-data; name="title"\r\n\r\nx\r\n--b--\r\n'),
                       ("text/plain", b"title=x"), ("", b"title=x")]:  # fmt: skip
        answer = api.post("/ui/tickets/create", data=body, headers={**hx, "Content-Type": kind})
        assert answer.status_code == 400, (kind, answer.text[:200])
        message = answer.json()["message"]
        assert message.startswith("a dashboard form is sent as application/x-www-form-urlencoded")
    assert api.get("/v1/tickets").json()["items"] == []
    good = api.post("/ui/tickets/create", data="title=caf%C3%A9&target=agent+echo", headers=hx)
    assert good.status_code == 200 and "ticket 1 created" in good.text, good.text
    assert [t["title"] for t in api.get("/v1/tickets").json()["items"]] == ["café"]
    assert "Traceback" not in api.stop()


def test_a_json_body_is_utf8_without_a_bom_or_refused(api: Api) -> None:
    """`json.loads` on bytes skips a UTF-8 byte-order mark and reads UTF-16 and UTF-32:
    such a ticket was made, though JSON between systems MUST be UTF-8 without a BOM (RFC
    8259 section 8.1). Now a 400 `bad_request` with one line; nothing is made."""
    ticket = json.dumps({"title": "café", "agent": "echo", "draft": True})
    js = {"Content-Type": "application/json"}
    for body, said in [
        (b"\xef\xbb\xbf" + ticket.encode(), "body: it is UTF-8 with a byte-order mark"),
        (ticket.encode("utf-16"), "body: it is UTF-16 (it starts with a byte-order mark)"),
        (ticket.encode("utf-32"), "body: it is UTF-32 (it starts with a byte-order mark)"),
        (ticket.replace("\\u00e9", "\u00e9").encode("latin-1"), "body: it is not UTF-8 (byte 14"),
    ]:
        answer = api.post("/v1/tickets", data=body, headers=js)
        assert answer.status_code == 400, (body[:20], answer.text[:200])
        assert answer.json()["error"] == "bad_request"
        message = answer.json()["message"]
        assert message.startswith(said) and "RFC 8259" in message and "\n" not in message
    bare = api.post("/v1/tickets", data=ticket.encode("utf-16-le"), headers=js)  # no mark
    assert bare.status_code == 422 and bare.json()["error"] == "invalid_request", bare.text
    assert api.get("/v1/tickets").json()["items"] == []
    good = api.post("/v1/tickets", data=ticket.encode(), headers=js)
    assert good.status_code == 201 and good.json()["title"] == "café", good.text
    assert "Traceback" not in api.stop()
