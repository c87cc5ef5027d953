"""A TCP proxy in front of a test's PostgreSQL server, that a test can break for the
clients behind it alone (the server, which other tests share, runs on): `freeze` (no byte
forwarded any more, connections kept open and new ones accepted: a server paused with
`SIGSTOP`, or a network that drops everything) or `cut` (every connection closed, new ones
refused: a server that stopped)."""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._frozen = threading.Event()
        self._ended = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str) -> str:
        """`url` (of the proxied server) pointed at this proxy instead."""
        host, port = self._target
        return url.replace(f"@{host}:{port}/", f"@127.0.0.1:{self.port}/")

    def freeze(self) -> None:
        """From now on nothing is forwarded either way, and new connections are accepted
        and never answered."""
        self._frozen.set()

    def cut(self) -> None:
        """Close every connection and stop listening: connections are refused."""
        self._ended.set()
        with self._lock:
            for sock in [self._listener, *self._sockets]:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _keep(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._ended.is_set():
                sock.close()
                return False
            self._sockets.append(sock)
            return True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._keep(client) or self._frozen.is_set():
                continue  # (held open, never answered)
            try:
                upstream = socket.create_connection(self._target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            if not self._keep(upstream):
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                break
            if not data:
                break
            if self._frozen.is_set():
                self._ended.wait()  # held: the bytes never arrive
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
