"""No client can hold `swarm-engine serve`: a request head and body must come within their
bounds (`request_head_timeout`, `request_body_timeout`), connections past
`api_max_connections`, or past `api_max_connections_per_address` from one client
address, are answered 503, running out of file descriptors is a log line
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
import struct
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


FLOODER, OTHER = "127.0.0.1", "127.0.0.2"
"""Two client addresses: on Linux all of 127.0.0.0/8 is this machine's loopback."""
HALF_HEAD = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n"  # no blank line: it never ends


def from_address(api: Api, source: str, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(address(api), timeout=WAIT, source_address=(source, 0))
    if first:
        sock.sendall(first)
    return sock


def get_from(api: Api, source: str) -> bytes:
    """The whole answer to `GET /healthz` sent from `source` (the server then closes)."""
    host, port = address(api)
    sock = from_address(
        api,
        source,
        f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode(),
    )
    try:
        return until_closed(sock)
    finally:
        sock.close()


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a client that crashed or a middlebox does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def answered(socks: list[socket.socket]) -> list[socket.socket]:
    """The sockets with something to read now (an answer, or the server's close)."""
    return select.select(socks, [], [], 0)[0] if socks else []


@pytest.fixture
def second_address() -> None:
    """Skips a test when this machine cannot connect from 127.0.0.2 (not Linux)."""
    probe = socket.socket()
    try:
        probe.bind((OTHER, 0))
    except OSError:
        pytest.skip(f"cannot connect from {OTHER} here")
    finally:
        probe.close()


@pytest.mark.usefixtures("second_address")
def test_one_address_cannot_hold_every_connection(home: Path) -> None:
    """One address opens more half-sent connections than the whole cap: only the
    per-address cap of them is kept, so another address is still served; once the flood
    closes (some of it by a reset), the first address is served again."""
    api = start_api(
        home, token=TOKEN, SWARM_API_MAX_CONNECTIONS="8",
        SWARM_API_MAX_CONNECTIONS_PER_ADDRESS="4", SWARM_REQUEST_HEAD_TIMEOUT="3600",
    )  # fmt: skip
    flood = [from_address(api, FLOODER, HALF_HEAD) for _ in range(10)]
    try:
        got = get_from(api, OTHER)  # (taken after every one of the flood, in order)
        assert got.startswith(b"HTTP/1.1 200 "), got
        # The refused ones were answered before that 200 was sent: they can be read now.
        refused = answered(flood)
        assert len(refused) == 6, len(refused)
        for sock in refused:
            got = until_closed(sock)
            assert got.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in got.lower(), got
            assert b'"too_many_connections"' in got
            assert b"4 connections from 127.0.0.1 are open" in got, got
            flood.remove(sock)
            sock.close()
        assert get_from(api, FLOODER).startswith(b"HTTP/1.1 503 ")
        for i, sock in enumerate(flood):  # half of them closed, half reset
            if i % 2:
                reset(sock)
            else:
                sock.close()
        flood = []
        wait_until(
            lambda: get_from(api, FLOODER).startswith(b"HTTP/1.1 200 "),
            WAIT, "the flooding address served again",
        )  # fmt: skip
    finally:
        for sock in flood:
            sock.close()
        log = api.stop()
    assert "Traceback" not in log, log[-3000:]
    line = "a connection was refused: 4 connections from 127.0.0.1 are open"
    assert log.count(line) == 1, log[-3000:]  # 7 refusals, one line (a minute)


def held_body(api: Api, source: str) -> socket.socket:
    """A request whose head came and whose body never ends (held for the body timeout)."""
    return from_address(
        api, source,
        b"POST /v1/tickets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ti",
    )  # fmt: skip


@pytest.mark.usefixtures("second_address")
def test_connections_that_end_any_way_are_uncounted(home: Path) -> None:
    """Connections closed by their client, reset, refused as bad HTTP, timed out, and
    reset in the middle of a request or after a kept-alive answer: once the server has
    seen them go, none is still counted against their address (the whole per-address
    cap less one held, one more request is served, and none of those held was
    refused)."""
    cap = 6
    api = start_api(
        home, token=TOKEN, SWARM_API_MAX_CONNECTIONS_PER_ADDRESS=str(cap),
        SWARM_REQUEST_HEAD_TIMEOUT="1", SWARM_REQUEST_BODY_TIMEOUT="3600",
    )  # fmt: skip
    held: list[socket.socket] = []
    try:
        host, port = address(api)
        closed = from_address(api, FLOODER, HALF_HEAD)
        was_reset = from_address(api, FLOODER, HALF_HEAD)
        bad = from_address(api, FLOODER, b"NOT HTTP AT ALL\r\n\r\n")
        timed_out = from_address(api, FLOODER, HALF_HEAD)
        in_request = held_body(api, FLOODER)
        kept = from_address(
            api, FLOODER, f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        )
        assert kept.recv(64).startswith(b"HTTP/1.1 200 ")  # (and the connection kept alive)
        closed.close()
        reset(was_reset)
        assert until_closed(bad).startswith(b"HTTP/1.1 400 ")
        bad.close()
        assert until_closed(timed_out).startswith(b"HTTP/1.1 408 ")
        timed_out.close()
        reset(in_request)
        reset(kept)

        def none_counted() -> bool:
            for sock in held:
                reset(sock)
            held[:] = [held_body(api, FLOODER) for _ in range(cap - 1)]
            got = get_from(api, FLOODER)  # (taken after the held ones, in order)
            return got.startswith(b"HTTP/1.1 200 ") and not answered(held)

        wait_until(none_counted, WAIT, "every ended connection uncounted")
        held.append(held_body(api, FLOODER))  # the cap still holds: one more is refused
        wait_until(
            lambda: get_from(api, FLOODER).startswith(b"HTTP/1.1 503 "),
            WAIT, "a connection over the per-address cap refused",
        )  # fmt: skip
        assert get_from(api, OTHER).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()
        log = api.stop()
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.usefixtures("second_address")
def test_no_per_address_cap_behind_a_proxy(home: Path) -> None:
    """`api_max_connections_per_address = 0`: one address may hold connections up to the
    whole cap (every client of a reverse proxy comes from its address)."""
    api = start_api(
        home, token=TOKEN, SWARM_API_MAX_CONNECTIONS_PER_ADDRESS="0",
        SWARM_API_MAX_CONNECTIONS="80", SWARM_REQUEST_HEAD_TIMEOUT="3600",
    )  # fmt: skip
    held = [from_address(api, FLOODER, HALF_HEAD) for _ in range(78)]
    try:
        assert get_from(api, FLOODER).startswith(b"HTTP/1.1 200 ")
        assert not answered(held)
    finally:
        for sock in held:
            sock.close()
        api.stop()


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


def server_ends(api: Api, client_port: int) -> list[tuple[int, int]]:
    """The server's end of the connection from `client_port`, as the kernel holds it:
    (TCP state, bytes in its send queue), from /proc/net/tcp and tcp6 (empty: gone)."""
    port, out = address(api)[1], []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(name)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1].rsplit(":", 1)[1], fields[2].rsplit(":", 1)[1]
            if int(local, 16) == port and int(remote, 16) == client_port:
                out.append((int(fields[3], 16), int(fields[4].split(":")[0], 16)))
    return out


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc/net/tcp")
def test_a_stalled_download_is_reset(logged: Path) -> None:
    """A download whose client stopped reading is reset, its unsent bytes dropped, the
    kernel's too: the server's end of the connection is gone at once (a plain close left
    it in FIN-WAIT-1 with some MiB still to send, for as long as the client did not
    read), and the client's read ends in a reset, not in the rest of the log."""
    api = start_api(logged, token=TOKEN, SWARM_STREAM_STALL_TIMEOUT="0.5")
    socks: list[socket.socket] = []
    try:
        socks = list(downloading(api, 1))
        sock = socks[0]
        mine = sock.getsockname()[1]
        assert server_ends(api, mine), "the server's end of the connection"
        wait_until(lambda: "took nothing for 0.5s" in "".join(api.lines), WAIT, "the drop")
        wait_until(lambda: not server_ends(api, mine), 10, "the server's end gone (not FIN-WAIT-1)")
        got = b""
        with pytest.raises(ConnectionResetError):
            while more := sock.recv(65536):
                got += more
        assert len(got) < LOG_BYTES
    finally:
        for each in socks:
            each.close()
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
