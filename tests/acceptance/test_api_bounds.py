"""No client can hold `swarm-engine serve`: a request head and body must come within their
bounds (`request_head_timeout`, `request_body_timeout`), connections past
`api_max_connections` are answered 503, running out of file descriptors is a log line
and not a traceback per accept, and a log download is sent as it is read (a bounded
amount of memory each, at most `MAX_LOG_DOWNLOADS` at once).

Real servers on free ports, real sockets; every wait is for a condition, with a generous
timeout."""

from __future__ import annotations

import re
import resource
import select
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.acceptance.test_big_stored_logs import write_run
from tests.acceptance.test_log_files import _step as step_with_log_file
from tests.support.api import Api, start_api
from tests.support.cli import swarm_inproc, wait_until

from swarm_engine.api.deps import MAX_LOG_DOWNLOADS
from swarm_engine.service.logs import as_text
from swarm_engine.store import open_store

MiB = 1024 * 1024
TOKEN = "a-token-for-the-bounded-server"
LOG_BYTES = 10 * MiB
WAIT = 60.0
"""Seconds a test waits for what the server should do within about one second."""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    return home


@pytest.fixture
def logged(home: Path) -> Path:
    """A home whose ticket 100 has one step with a 10 MiB stored log."""
    write_run(home, [LOG_BYTES])
    return home


def address(api: Api) -> tuple[str, int]:
    host, port = api.url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


def connect(api: Api, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(address(api), timeout=WAIT)
    if first:
        sock.sendall(first)
    return sock


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset too)."""
    got = b""
    try:
        while more := sock.recv(65536):
            got += more
    except ConnectionResetError:
        pass
    return got


def test_a_head_that_never_ends_is_answered_408_and_closed(home: Path) -> None:
    api = start_api(home, token=TOKEN, SWARM_REQUEST_HEAD_TIMEOUT="0.5")
    try:
        half = connect(api, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")  # no blank line
        silent = connect(api)  # connects and sends nothing
        for sock in (half, silent):
            got = until_closed(sock)
            assert got.startswith(b"HTTP/1.1 408 "), got
            assert b'"request_timeout"' in got
            sock.close()
        assert api.get("/healthz").status_code == 200
        # a kept-alive connection that begins a second head gets the same bound
        kept = connect(api, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n")
        got = until_closed(kept)
        assert got.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 408 " in got, got
        kept.close()
    finally:
        log = api.stop()
    assert "Traceback" not in log
    assert "no whole request head within 0.5s" in log


def test_a_head_sent_a_line_at_a_time_does_not_push_its_deadline_back(home: Path) -> None:
    """A client that sends one more header line whenever the server has said nothing for
    a while (slowloris) still gets its 408 once `request_head_timeout` has passed since
    the connection."""
    api = start_api(home, token=TOKEN, SWARM_REQUEST_HEAD_TIMEOUT="1")
    try:
        sock = connect(api, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        got = b""
        sent = 0
        while not got and sent < 600:  # (60 s at most)
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                got = until_closed(sock)
            else:
                sock.sendall(b"X-More: %d\r\n" % sent)
                sent += 1
        sock.close()
        assert got.startswith(b"HTTP/1.1 408 "), (sent, got)
    finally:
        api.stop()


def test_a_body_that_never_ends_closes_its_connection(home: Path) -> None:
    api = start_api(home, token=TOKEN, SWARM_REQUEST_BODY_TIMEOUT="0.5")
    try:
        sock = connect(
            api,
            b"POST /v1/tickets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ti",
        )  # fmt: skip
        until_closed(sock)  # (no answer: the handler sees the client gone)
        sock.close()
        tickets = api.get("/v1/tickets")
        assert tickets.status_code == 200 and tickets.json()["items"] == []
    finally:
        log = api.stop()
    assert "Traceback" not in log
    assert "no whole request body within 0.5s" in log


def test_connections_over_the_cap_are_answered_503(home: Path) -> None:
    api = start_api(home, token=TOKEN, SWARM_API_MAX_CONNECTIONS="8")
    held = [connect(api) for _ in range(8)]
    try:
        over = connect(api)
        got = until_closed(over)
        over.close()
        assert got.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in got.lower(), got
        assert b'"too_many_connections"' in got
        held.pop().close()  # the server sees it gone and takes a new one again

        def answered() -> bool:
            try:
                return api.get("/healthz", timeout=WAIT).status_code == 200
            except OSError:  # (requests' ConnectionError: the 503's close)
                return False

        wait_until(answered, WAIT, "a connection taken once one closed")
    finally:
        for sock in held:
            sock.close()
        log = api.stop()
    assert "a connection was refused: 8 connections are open" in log


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs prlimit")
def test_running_out_of_file_descriptors_is_a_line_not_tracebacks(home: Path) -> None:
    """The server's open-file limit lowered under it (its connection cap was reckoned
    from the one it started with): the accepts that fail are one log line, and once the
    clients go the server answers again."""
    api = start_api(home, token=TOKEN)
    held: list[socket.socket] = []
    try:
        assert api.get("/healthz").status_code == 200
        resource.prlimit(api.proc.pid, resource.RLIMIT_NOFILE, (64, 64))
        held = [connect(api) for _ in range(200)]  # (queued by the kernel past the limit)
        wait_until(
            lambda: any("cannot accept connections" in line for line in api.lines),
            WAIT, "the line about accepts that fail",
        )  # fmt: skip
        for sock in held:
            sock.close()
        held = []

        def answered() -> bool:
            try:
                return api.get("/healthz", timeout=WAIT).status_code == 200
            except OSError:
                return False

        wait_until(answered, WAIT, "the server answering again")
    finally:
        for sock in held:
            sock.close()
        log = api.stop()
    assert "Traceback" not in log, log[-3000:]
    assert len(re.findall("cannot accept connections", log)) == 1, log[-3000:]


def rss(api: Api) -> int:
    status = Path(f"/proc/{api.proc.pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert found
    return int(found.group(1)) * 1024


def downloading(api: Api, n: int, ticket: int = 100) -> Iterator[socket.socket]:
    """`n` downloads of a ticket's log that stop reading once the response began."""
    for _ in range(n):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(WAIT)
        sock.connect(address(api))
        sock.sendall(
            f"GET /v1/tickets/{ticket}/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ".encode()
            + TOKEN.encode() + b"\r\n\r\n"
        )  # fmt: skip
        head = sock.recv(64)
        assert head.startswith(b"HTTP/1.1 200 "), head
        yield sock


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_log_downloads_are_sent_as_read_in_little_memory(logged: Path) -> None:
    """24 slow downloads of a 10 MiB log: the server grows by far less than one copy of
    the log each (about 2 MiB each is measured, most of it the worker threads' SQLite
    connections and their page caches; 96 MiB in all allowed, where the log built whole
    took 166 MiB here and 615 MiB with clients that read); a whole download is the
    bounded text, with the headers it always had."""
    api = start_api(logged, token=TOKEN, SWARM_STREAM_STALL_TIMEOUT="3600")
    socks: list[socket.socket] = []
    try:
        got = api.get("/v1/tickets/100/logs")
        store = open_store(logged / "tickets.db")
        try:
            assert got.text == as_text(store, 100)[1]
        finally:
            store.close()
        assert got.headers["content-type"] == "text/plain; charset=utf-8"
        assert got.headers["content-disposition"] == 'attachment; filename="ticket-100-run-1.log"'
        before = rss(api)
        socks = list(downloading(api, 24))
        grown = rss(api) - before
        assert grown < 96 * MiB, f"{grown / MiB:.0f} MiB for 24 slow downloads"
    finally:
        for sock in socks:
            sock.close()
        api.stop()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_log_file_is_sent_as_read_too(home: Path) -> None:
    """A step whose log is only a file (a run recorded before logs were stored): 8 slow
    downloads of a 48 MiB one grow the server by far less than a copy each."""
    folder = home / "artifacts" / "run-1" / "main.1"
    folder.mkdir(parents=True)
    line = b"a line of an old step's log \xe2\x82\xac\n"
    (folder / "output.log").write_bytes(line * (48 * MiB // len(line)))
    step_with_log_file(home, 300, str(folder / "output.log"))
    api = start_api(home, token=TOKEN, SWARM_STREAM_STALL_TIMEOUT="3600")
    socks: list[socket.socket] = []
    try:
        got = api.get("/v1/tickets/300/logs")
        assert got.content.count(line) == 48 * MiB // len(line)
        before = rss(api)
        socks = list(downloading(api, 8, ticket=300))
        grown = rss(api) - before
        assert grown < 48 * MiB, f"{grown / MiB:.0f} MiB for 8 slow downloads"
    finally:
        for sock in socks:
            sock.close()
        api.stop()


def test_log_downloads_are_capped(logged: Path) -> None:
    api = start_api(logged, token=TOKEN, SWARM_STREAM_STALL_TIMEOUT="3600")
    socks: list[socket.socket] = []
    try:
        socks = list(downloading(api, MAX_LOG_DOWNLOADS))
        over = api.get("/v1/tickets/100/logs")
        assert over.status_code == 503 and over.headers["Retry-After"].isdigit()
        assert over.json()["error"] == "too_many_downloads"
        assert api.get("/v1/tickets/100").status_code == 200
        socks.pop().close()

        def downloaded() -> bool:
            with api.get("/v1/tickets/100/logs", stream=True) as again:
                return again.status_code == 200

        wait_until(downloaded, WAIT, "a download slot freed")
    finally:
        for sock in socks:
            sock.close()
        api.stop()


def test_a_stalled_download_is_dropped(logged: Path) -> None:
    api = start_api(logged, token=TOKEN, SWARM_STREAM_STALL_TIMEOUT="0.5")
    try:
        (sock,) = downloading(api, 1)
        wait_until(lambda: "took nothing for 0.5s" in "".join(api.lines), WAIT, "the drop")
        until_closed(sock)
        sock.close()
    finally:
        api.stop()


def test_a_download_whose_store_fails_midway_is_dropped(logged: Path) -> None:
    """The store fails while a download is sent (its table dropped): the connection is
    dropped (the client does not get a chunked body's end, so it cannot take the cut
    text for the whole log), with one line in the log and no traceback."""
    api = start_api(logged, token=TOKEN, SWARM_STREAM_STALL_TIMEOUT="3600")
    try:
        (sock,) = downloading(api, 1)
        conn = sqlite3.connect(logged / "tickets.db", timeout=30)
        try:
            conn.execute("DROP TABLE step_logs")
            conn.commit()
        finally:
            conn.close()
        got = until_closed(sock)
        sock.close()
        assert not got.endswith(b"0\r\n\r\n")
        assert len(got) < LOG_BYTES
    finally:
        log = api.stop()
    assert "a log download failed midway, its connection dropped" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
