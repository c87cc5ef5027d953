"""Live log streams whose clients stop reading: each holds a bounded amount of the server's
memory (it reads the log in batches of about `STREAM_BATCH_BYTES`, and the next only once
the last was taken by the connection), and a client that takes nothing for
`stream_stall_timeout` seconds is disconnected, its slot freed.

A stalled client: a raw socket with a small receive buffer that sends the request, reads
the response's first bytes (so the server has read its first batch), and no more."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.acceptance.test_big_stored_logs import write_run
from tests.support.api import Api, start_api
from tests.support.cli import swarm_inproc, wait_until

MiB = 1024 * 1024
TOKEN = "a-token-for-the-stalled-streams"
LOG_BYTES = 10 * MiB


@pytest.fixture
def logged(tmp_path: Path) -> Path:
    """A home whose ticket 100 has one step with a 10 MiB stored log."""
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    write_run(home, [LOG_BYTES])
    return home


def rss(api: Api) -> int:
    status = Path(f"/proc/{api.proc.pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert found
    return int(found.group(1)) * 1024


def stalled(api: Api, n: int) -> Iterator[socket.socket]:
    """`n` streams of ticket 100 that stop reading once the response has begun."""
    host, port = api.url.split("://", 1)[1].rsplit(":", 1)
    for _ in range(n):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect((host, int(port)))
        sock.sendall(
            f"GET /v1/tickets/100/logs/stream HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        head = sock.recv(64)
        assert head.startswith(b"HTTP/1.1 200 "), head
        yield sock


def metric(api: Api, name: str) -> float | None:
    found = re.search(rf"^{name} (\S+)$", api.get("/metrics").text, re.MULTILINE)
    return float(found.group(1)) if found else None


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_stalled_streams_hold_little_memory(logged: Path) -> None:
    """24 stalled streams of a 10 MiB log: the server grows by far less than the 8 MiB a
    stream read at once before (about 1 MiB each is measured; 64 MiB in all allowed)."""
    api = start_api(logged, token=TOKEN)
    socks: list[socket.socket] = []
    try:
        before = rss(api)
        socks = list(stalled(api, 24))
        grown = rss(api) - before
        assert grown < 64 * MiB, f"{grown / MiB:.0f} MiB for 24 stalled streams"
    finally:
        for sock in socks:
            sock.close()
        api.stop()


def test_a_stalled_client_is_disconnected_and_its_slot_freed(logged: Path) -> None:
    api = start_api(logged, token=TOKEN, SWARM_STREAM_STALL_TIMEOUT="0.5")
    socks: list[socket.socket] = []
    try:
        socks = list(stalled(api, 3))
        wait_until(
            lambda: metric(api, "swarm_api_log_streams_stalled_total") == 3,
            30, "the stalled streams to be dropped",
        )  # fmt: skip
        assert metric(api, "swarm_api_log_streams") == 0
        for sock in socks:  # each connection was closed: reading ends, short of the log
            got = 0
            try:
                while more := sock.recv(MiB):
                    got += len(more)
            except ConnectionResetError:
                pass
            assert got < LOG_BYTES
        with api.get("/v1/tickets/100/logs/stream", stream=True, timeout=60) as whole:
            assert whole.status_code == 200
            assert sum(len(b) for b in whole.iter_content(MiB)) > LOG_BYTES  # a reader: all
    finally:
        for sock in socks:
            sock.close()
        out = api.stop()
    assert "Traceback" not in out and "without completing" not in out, out
