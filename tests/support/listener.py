"""A TCP listener on 127.0.0.1 that records every connection and every byte sent to it, for
tests that must show something is never contacted."""

from __future__ import annotations

import select
import socket
import threading
from types import TracebackType


class Listener:
    """`with Listener() as ear:` listens on `ear.url`; after the block, `ear.received` holds
    the bytes of every connection made to it (an empty list when nothing came). A
    connection is answered by closing it, so a client fails fast instead of waiting."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _take(self) -> None:
        conn, _ = self._sock.accept()
        with conn:
            conn.settimeout(0.5)
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
        self.received.append(data)

    def _serve(self) -> None:
        while not self._stop.is_set():
            if select.select([self._sock], [], [], 0.05)[0]:
                self._take()

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        # a connection the kernel completed but the thread had not yet taken still counts
        while select.select([self._sock], [], [], 0)[0]:
            self._take()
        self._sock.close()


class Greeter:
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.sendall(b"hello from the host\n")
            conn.close()

    def close(self) -> None:
        self.sock.close()
