"""A request that gives both `Content-Length` and `Transfer-Encoding` is a 400 and its
connection is closed unread (docs/api.md, "Errors"): h11 read its body by the chunks and
went on with what followed, so a proxy in front going by the length could slip a second
request through (request smuggling, RFC 9112 section 6.3). One framing alone works."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.api import Api, start_api
from tests.support.cli import swarm_inproc

TOKEN = "framing-token-0123456789"
BODY = b'{"title": "framed", "agent": "echo"}'


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    server = start_api(home, token=TOKEN)
    try:
        yield server
    finally:
        server.stop()


def exchange(api: Api, head: bytes, rest: bytes) -> bytes:
    """Send a POST /v1/tickets with `head`'s extra header lines, then `rest`; all the
    server sends back until it closes the connection (or 10 s pass)."""
    host, port = api.url.split("://", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/tickets HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n" + head + b"\r\n" + rest
        )
        got = b""
        try:
            while more := sock.recv(65536):
                got += more
        except TimeoutError:
            pass
        return got


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


def smuggled() -> bytes:
    return (
        b"GET /v1/tickets HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\n\r\n"
    )


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"content-length: 200\r\nTRANSFER-ENCODING: chunked\r\n",
    ],
)
def test_both_framings_are_refused_and_the_rest_never_read(api: Api, head: bytes) -> None:
    got = exchange(api, head, chunked(BODY) + smuggled())
    status, _, rest = got.partition(b"\r\n")
    assert status == b"HTTP/1.1 400 Bad Request", got[:300]
    assert b"\r\nconnection: close\r\n" in rest.lower(), got[:300]
    assert got.count(b"HTTP/1.1 ") == 1, got  # the request after it: never answered
    payload = json.loads(got.split(b"\r\n\r\n", 1)[1])
    assert payload["error"] == "bad_request"
    assert "both Content-Length and Transfer-Encoding" in payload["message"]
    assert api.get("/v1/tickets").json()["items"] == []  # nothing was created


@pytest.mark.parametrize(
    ("head", "data"),
    [
        (b"Content-Length: %d\r\n" % len(BODY), BODY),
        (b"Transfer-Encoding: chunked\r\n", chunked(BODY)),
    ],
)
def test_one_framing_alone_is_read_as_ever(api: Api, head: bytes, data: bytes) -> None:
    got = exchange(api, head + b"Connection: close\r\n", data)
    assert got.startswith(b"HTTP/1.1 201 "), got[:300]
    assert [t["title"] for t in api.get("/v1/tickets").json()["items"]] == ["framed"]


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (b"GARBAGE\r\n\r\n", "illegal request line"),
        (b"GET /v1/tickets HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", "illegal header line"),
        (
            b"GET /v1/tickets HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "conflicting Content-Length headers",
        ),
    ],
)
def test_what_is_not_http_is_a_json_400_said_once_in_the_log(
    api: Api, request_bytes: bytes, reason: str
) -> None:
    """Bytes h11 cannot read as a request are answered as every error of the API is (JSON,
    `bad_request`, h11's reason), not uvicorn's text/plain `Invalid HTTP request
    received.`, and 20 of them make one line in the server's log, not 20."""
    host, port = api.url.split("://", 1)[1].rsplit(":", 1)
    for _ in range(20):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(request_bytes)
            got = b""
            while more := sock.recv(65536):
                got += more
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), got[:300]
        assert b"content-type: application/json" in head.lower(), head
        payload = json.loads(body)
        assert payload["error"] == "bad_request"
        assert payload["message"].startswith(f"invalid HTTP request: {reason}"), payload
    assert api.get("/v1/tickets").status_code == 200  # the server goes on
    said = api.stop()
    assert "Invalid HTTP request received." not in said, said
    assert said.count("a request was refused: invalid HTTP request") == 1, said
