"""uvicorn's HTTP/1.1 protocol (h11), bounded so that no client can hold the server:

- a request's head (request line and headers) must arrive within `request_head_timeout`
  seconds of the connection (or of its first byte, after a kept-alive response; uvicorn's
  `timeout_keep_alive` bounds the wait for that byte), and its body within
  `request_body_timeout` seconds of the head; else the connection is closed (a head that
  did not come is answered 408 first). uvicorn has no such bounds: it only times out an
  idle kept-alive connection, so a head sent but never finished held its connection for
  ever;
- at most `Bounds.max_connections` connections are open at once: one more is answered 503
  and closed as it comes (uvicorn's `limit_concurrency` answers only a request over its
  limit, and a connection that never sends a whole head is never one);
- at most `Bounds.per_address.cap` of them from one client address (`address_key`: an
  IPv6 one's /64), answered the same way past it, so that one client holding
  half-sent connections cannot fill the cap above for every other client (0: no such
  cap, for a server behind a reverse proxy, whose clients all share its address). A
  connection is counted once it is taken and uncounted when it is lost, however it
  ends (closed, timed out, reset, failed);
- a socket that cannot be accepted (no file descriptor left) is one log line a minute
  (`quiet_accept_errors`), not a traceback per try.

Each request's scope also carries a way to drop its connection at once, and to tell
whether it is gone already (`deps.ABORT_EXTENSION`). A plain close waits until the
client has taken every byte still buffered, which a client that stopped reading never
does; a live log stream whose client stalled drops it instead (`api/logs.py`). Dropping resets the connection (`reset`:
`SO_LINGER` 0, then the transport's abort): asyncio's abort alone discards only its own
buffer and closes the socket, and the kernel then goes on sending what it holds (some
MiB: the socket stayed in FIN-WAIT-1, the client saw no end) as if closed gracefully.

Imported only by `server.serve`, with uvicorn (whose version `constraints.txt` pins: this
leans on `H11Protocol.handle_events` making `self.cycle` for each request, and on its
`connections` set).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from swarm_engine.api.deps import ABORT_EXTENSION

log = logging.getLogger(__name__)

NOTICE_SECONDS = 60.0
"""A notice of one kind (connections refused, heads that did not come, accepts that
failed) is logged at most once in this long, with how many times it happened."""
FD_RESERVE = 256
"""File descriptors kept for the store, the registry, log files and the event loop: the
connection cap is at most the open-file limit less this (at most half of it)."""


@dataclass
class Notices:
    """Log lines of one kind at most once per `NOTICE_SECONDS`, with the count since the
    last one. Used from the event loop only: no lock."""

    every: float = NOTICE_SECONDS
    _last: dict[str, float] = field(default_factory=dict)
    _count: dict[str, int] = field(default_factory=dict)

    def note(self, kind: str, message: str) -> None:
        count = self._count.get(kind, 0) + 1
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.every:
            self._count[kind] = count
            return
        self._last[kind], self._count[kind] = now, 0
        log.warning("%s (%d of them since the last such line)", message, count)


def address_key(host: str) -> str:
    """What a client's connections are counted under: its IPv4 address (an IPv4-mapped
    IPv6 one's too), or its IPv6 address's /64, the least one site is given (a client
    holding a /64 holds 2^64 addresses); any other name as it is."""
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])  # (no zone: fe80::1%eth0)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class PerAddress:
    """Connections open from each client address (`address_key`), at most `cap` from
    one (0: no cap). An address with none open has no entry, so the table holds only
    the addresses with open connections. Used from the event loop only: no lock."""

    cap: int = 0
    open: dict[str, int] = field(default_factory=dict)

    def take(self, key: str) -> bool:
        """Count one more connection from `key`; False (nothing counted) at the cap."""
        count = self.open.get(key, 0)
        if count >= self.cap:
            return False
        self.open[key] = count + 1
        return True

    def give_back(self, key: str) -> None:
        """Uncount one connection `take` counted."""
        count = self.open.pop(key, 0) - 1
        if count > 0:
            self.open[key] = count


@dataclass(frozen=True)
class Bounds:
    head_timeout: float
    body_timeout: float
    max_connections: int
    per_address: PerAddress = field(default_factory=PerAddress, compare=False)
    notices: Notices = field(default_factory=Notices, compare=False)


def connection_cap(wanted: int, open_files: int) -> int:
    """The most connections to keep open: `wanted`, but never so many that the server's
    other files (`FD_RESERVE`) find no descriptor left under an `open_files` limit
    (negative: none, `RLIM_INFINITY`)."""
    if open_files < 0:
        return wanted
    return max(1, min(wanted, max(open_files // 2, open_files - FD_RESERVE)))


def _answer(status: str, code: str, message: str, *extra: str) -> bytes:
    body = json.dumps({"error": code, "message": message}).encode()
    head = [f"HTTP/1.1 {status}", "content-type: application/json", *extra,
            "connection: close", f"content-length: {len(body)}"]  # fmt: skip
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class AbortableH11Protocol(H11Protocol):
    bounds: ClassVar[Bounds] = Bounds(10.0, 30.0, 1024)
    """Set by `bounded` for a server's settings."""
    _deadline: asyncio.TimerHandle | None = None
    _waiting: str = ""
    """What the deadline waits for: "head", "body", or "" (none)."""
    _counted_as: str | None = None
    """The address key this connection is counted under in `bounds.per_address`, until
    it is lost (None: not counted)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        refused = self._refusal()
        if refused is not None:
            kind, message = refused
            self.connections.discard(self)
            transport.write(_answer("503 Service Unavailable", "too_many_connections",
                                    message, "retry-after: 1"))  # fmt: skip
            transport.close()
            self.bounds.notices.note(kind, f"a connection was refused: {message}")
            return
        self._wait("head", self.bounds.head_timeout)

    def _refusal(self) -> tuple[str, str] | None:
        """Why this new connection is refused (a notice's kind and the message), or None
        when it is taken, and then counted under its address."""
        limit = self.bounds.max_connections
        if len(self.connections) > limit:
            return "refused", f"{limit} connections are open, as many as this server keeps"
        per = self.bounds.per_address
        if per.cap and self.client is not None:  # (None: the client is gone already)
            key = address_key(self.client[0])
            if not per.take(key):
                return "refused from one address", (
                    f"{per.cap} connections from {key} are open, as many as this server"
                    " keeps from one address"
                )
            self._counted_as = key
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        key, self._counted_as = self._counted_as, None  # first: nothing below can skip it
        if key is not None:
            self.bounds.per_address.give_back(key)
        self._wait("", 0)
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        # a new request's handler task is made here, but runs only after this returns
        if self.cycle is not None:
            extensions = self.cycle.scope.setdefault("extensions", {})
            extensions[ABORT_EXTENSION] = {"abort": self.reset, "gone": self.transport.is_closing}
        if self.transport.is_closing():
            self._wait("", 0)
        elif self.conn.their_state is h11.IDLE:
            if self._waiting != "head":  # (a head's deadline runs on as more of it comes)
                begun = bool(self.conn.trailing_data[0])  # else uvicorn's keep-alive waits
                self._wait("head" if begun else "", self.bounds.head_timeout)
        elif self.conn.their_state is h11.SEND_BODY:
            if self._waiting != "body":
                self._wait("body", self.bounds.body_timeout)
        else:
            self._wait("", 0)  # the request came whole (or the connection ends)

    def _wait(self, what: str, seconds: float) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._waiting = what
        if what:
            self._deadline = self.loop.call_later(seconds, self._expired, what, seconds)

    def _expired(self, what: str, seconds: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        self.bounds.notices.note(
            what, f"a connection was closed: no whole request {what} within {seconds}s"
        )
        if what == "head":
            message = f"no whole request head came within {seconds}s"
            self.transport.write(_answer("408 Request Timeout", "request_timeout", message))
            self.transport.close()
        else:  # a handler waits for the body: it sees the client gone
            self.reset()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what h11 cannot read as HTTP (it calls this while handling
        h11's `RemoteProtocolError`), as JSON like every other error of the API, with
        h11's reason (bounded) and its status (431 for a head too large), not uvicorn's
        text/plain `Invalid HTTP request received.`; the connection is closed."""
        exc = sys.exc_info()[1]
        status, why = 400, ""
        if isinstance(exc, h11.RemoteProtocolError):
            status, why = exc.error_status_hint, " ".join(str(exc).split())
        phrase = {431: "Request Header Fields Too Large"}.get(status, "Bad Request")
        status = status if status == 431 else 400
        code = "headers_too_large" if status == 431 else "bad_request"
        shown = why[:200] + ("…" if len(why) > 200 else "")
        message = f"invalid HTTP request: {shown}" if shown else "invalid HTTP request"
        self.transport.write(_answer(f"{status} {phrase}", code, message))
        self.transport.close()
        self.bounds.notices.note("unreadable", f"a request was refused: {message}")

    def reset(self) -> None:
        """Drop the connection at once: an RST, with every byte not yet sent discarded,
        the kernel's too (`SO_LINGER` 0), not a close that waits for the client to take
        them."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # (closed meanwhile: the abort ends it)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


UVICORN_INVALID = "Invalid HTTP request received."
"""uvicorn's own warning for each request h11 cannot read: a line per request that any
client can send in a loop; `send_400_response`'s notice says it at most once a minute."""


def _not_uvicorns_invalid(record: logging.LogRecord) -> bool:
    return record.getMessage() != UVICORN_INVALID


def bounded(bounds: Bounds) -> type[AbortableH11Protocol]:
    """The protocol class for a server with these bounds."""
    uvicorn_log = logging.getLogger("uvicorn.error")
    if _not_uvicorns_invalid not in uvicorn_log.filters:
        uvicorn_log.addFilter(_not_uvicorns_invalid)

    class BoundedH11Protocol(AbortableH11Protocol):
        pass

    BoundedH11Protocol.bounds = bounds
    return BoundedH11Protocol


OUT_OF_FILES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def quiet_accept_errors(notices: Notices) -> Any:
    """An event loop exception handler that makes asyncio's "socket.accept() out of
    system resource" (no file descriptor left: asyncio pauses accepting for a second and
    tries again) one line a minute instead of a traceback per try; other contexts go to
    the loop's default handler."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in OUT_OF_FILES:
            notices.note("accept", f"cannot accept connections: {exc.strerror or exc}")
            return
        loop.default_exception_handler(context)

    return handler
