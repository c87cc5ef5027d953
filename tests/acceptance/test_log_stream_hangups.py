"""Clients of a live log stream that hang up mid-stream cost the server no log lines.

A look at the store can hand a stream hundreds of events at once (a log of many small
chunks: up to 500 chunks a look), sent one after another without a turn of the event loop
between them. Once a write to a client that hung up fails, asyncio takes each further
write to that connection as a write to a lost one, and from the fifth on logs
`socket.send() raised exception.` per write, until the server tells the app the client is
gone at the loop's next turn: thousands of lines for a few hang-ups. A stream now sends
an event only while its connection is not closing.

The clients are raw sockets that read part of the stream, then reset the connection
(`SO_LINGER` 0), close it with bytes unread (the kernel resets it too), or stop reading
and close it.
"""

from __future__ import annotations

import re
import socket
import sqlite3
import struct
from pathlib import Path

import pytest
from tests.support.api import Api, sse_events, start_api
from tests.support.cli import swarm_inproc, wait_until
from tests.support.stored_logs import failed_ticket

KiB = 1024
CHUNK = 64
"""Bytes of each stored chunk: a look reads 500 of them, one event each."""
CHUNKS = 256 * KiB
"""16 MiB of log: more than the connection's buffers hold, so a client that reads part
of it hangs up while the server still sends."""
CLIENTS = 12
ROUNDS = 3
WARNING = "socket.send() raised exception"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home whose ticket 100 (failed) has one step with `CHUNKS` small stored chunks,
    as any SQLite client may write them."""
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    conn = failed_ticket(home / "tickets.db", 1)
    with conn:
        conn.executemany(
            "INSERT INTO step_logs (step_execution_id, data) VALUES (1, ?)",
            ((f"{n:08d}".ljust(CHUNK - 1, "x") + "\n",) for n in range(CHUNKS)),
        )
    conn.close()
    return home


def metric(api: Api, name: str) -> float | None:
    found = re.search(rf"^{name} (\S+)$", api.get("/metrics").text, re.MULTILINE)
    return float(found.group(1)) if found else None


def hang_up_mid_stream(api: Api, n: int) -> None:
    """Client `n`: open ticket 100's stream, read about `n` * 64 KiB of it past the
    head, then hang up, one of three ways."""
    host, port = api.url.split("://", 1)[1].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    try:
        sock.sendall(
            f"GET /v1/tickets/100/logs/stream HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        )
        got = sock.recv(64 * KiB)
        assert got.startswith(b"HTTP/1.1 200 "), got[:200]
        want = (n + 1) * 64 * KiB
        while len(got) < want and (more := sock.recv(64 * KiB)):
            got += more
        assert len(got) >= want, "the stream ended before the client hung up"
        if n % 3 == 0:  # a reset (a crashed client, a middlebox)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif n % 3 == 1:  # it stops reading first, then closes
            sock.shutdown(socket.SHUT_RD)
    finally:
        sock.close()  # (with bytes unread: the kernel resets the connection)


def test_clients_hanging_up_mid_stream_cost_no_warnings(home: Path) -> None:
    api = start_api(home)
    try:
        for _ in range(ROUNDS):
            for n in range(CLIENTS):
                hang_up_mid_stream(api, n)
        wait_until(
            lambda: metric(api, "swarm_api_log_streams") == 0, 30,
            "the streams of the clients that hung up to end",
        )  # fmt: skip
        # the server serves on: the log's last two chunks, then the end
        conn = sqlite3.connect(home / "tickets.db")
        ids = [row[0] for row in conn.execute("SELECT id FROM step_logs ORDER BY id DESC LIMIT 3")]
        conn.close()
        with api.get(f"/v1/tickets/100/logs/stream?after={ids[2]}", stream=True) as r:
            assert r.status_code == 200
            events = list(sse_events(r))
        assert [e["event"] for e in events] == ["log", "log", "end"]
    finally:
        out = api.stop()
    assert out.count(WARNING) == 0, f"{out.count(WARNING)} lines: {WARNING}"
    assert "Traceback" not in out and "ERROR" not in out, out[-3000:]
