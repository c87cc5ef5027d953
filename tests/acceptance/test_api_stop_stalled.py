"""`serve` stopped (SIGTERM) while log responses wait on clients that stopped reading: a
live stream and a download whose sockets' buffers are full. Each is dropped once the
server's log drain is over (`server.LOG_DRAIN_SECONDS`), and `serve` exits 0 with its one
line. Before, a send waiting on such a client never looked at `Server.stopping`: uvicorn
cancelled it at its 5 s graceful timeout, printing a traceback for each."""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.support.api import Api, start_api
from tests.support.cli import swarm, swarm_inproc, wait_until

LOUD = """\
name: loud
kind: shell
command: "head -c 6000000 /dev/urandom | base64"
"""
"""About 8 MB of log: far more than the sockets' buffers hold."""
PATHS = ("/v1/tickets/1/logs/stream", "/v1/tickets/1/logs")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    agent = write_agent(tmp_path / "loud", LOUD)
    assert swarm_inproc(home, "agent", "register", str(agent)).returncode == 0
    assert swarm_inproc(home, "ticket", "create", "--title", "l", "--agent", "loud").returncode == 0
    swarm(home, "run-ticket", "1", "--wait", check=True)
    return home


@pytest.fixture
def clients() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def waiting(sock: socket.socket) -> int:
    """Bytes the server sent that this client has not read (its receive queue)."""
    raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, struct.pack("i", 0))
    return int(struct.unpack("i", raw)[0])


def stalled_client(api: Api, path: str) -> socket.socket:
    """A client that asks for `path` and then never reads (a small receive buffer)."""
    host, port = api.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock


def test_sigterm_drops_log_responses_whose_clients_stopped_reading_without_a_traceback(
    home: Path, clients: list[socket.socket]
) -> None:
    api = start_api(home)
    try:
        clients.extend(stalled_client(api, path) for path in PATHS)
        for sock in clients:  # each response under way, its client's buffer filling
            wait_until(lambda s=sock: waiting(s) > 0, 30, "the server to start answering")
        api.proc.terminate()  # SIGTERM
        api.proc.wait(timeout=60)
    finally:
        said = api.stop()
    assert api.proc.returncode == 0, said
    assert "Traceback" not in said and "Exception in ASGI" not in said, said
    assert "Cancel" not in said, said
    assert said.rstrip().splitlines()[-1] == (
        "API stopped (SIGTERM): open requests were given their time to end"
    ), said
    download = clients[1]
    download.settimeout(30)
    got = b""
    try:
        while chunk := download.recv(1 << 20):
            got += chunk
    except ConnectionResetError:
        pass  # dropped (an RST)
    assert not got.endswith(b"0\r\n\r\n"), "a download cut short must not look whole"
