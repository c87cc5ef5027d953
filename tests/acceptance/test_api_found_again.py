"""What a fresh tester found in the API, again: a 405 lists the path's methods in
`Allow` and every GET route answers HEAD; a tokenless server parses `Host` strictly;
request bodies are strictly typed (no `"5"` for a number, no `"yes"` for a boolean)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
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
