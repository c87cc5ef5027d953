"""A small HTTP/1.1 server connection on asyncio streams, with h11 doing the protocol.

One `serve_connection` per accepted socket: it shows each request's head to `admit` before
reading a byte of its body (a refused request is answered and the connection closed, its
body never read), then reads the body whole (bounded by `max_body`), hands it to the
handler as an `Exchange`, and keeps the connection alive between requests as the client
asks. The handler answers through the exchange, streaming the body in pieces; a client
that hangs up mid-answer raises `ClientGone`. A request h11 cannot parse (conflicting
`Content-Length`, a head over 64 KiB) is answered 400 / 431 and the connection closed; a
head that does not arrive in time (or a kept-alive connection left idle) is closed unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import h11

READ_BYTES = 65536
MAX_HEAD_BYTES = 64 * 1024
LINGER_BYTES = 1024 * 1024
LINGER_SECONDS = 5.0
"""After refusing a request unread: how much of its body is drained, for how long, so that
closing does not reset the connection before the client has read the answer."""


class ClientGone(Exception):
    """The client closed the connection (or broke the protocol) mid-exchange."""


class Exchange:
    """One request and the means to answer it. `body` is empty until `admit` let it in."""

    def __init__(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        body: bytes,
    ) -> None:
        self._conn = conn
        self._writer = writer
        self.method = request.method.decode("ascii", "replace")
        self.target = request.target.decode("ascii", "replace")
        self.headers: list[tuple[str, str]] = [
            (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.headers
        ]
        self.body = body
        self.started = False

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def start(self, status: int, headers: Sequence[tuple[str, str]]) -> None:
        self.started = True
        await self._send(h11.Response(status_code=status, headers=list(headers)))

    async def send(self, data: bytes) -> None:
        if data:
            await self._send(h11.Data(data=data))

    async def end(self) -> None:
        await self._send(h11.EndOfMessage())

    async def respond(
        self, status: int, body: Any, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """A whole JSON answer."""
        data = json.dumps(body).encode()
        await self.start(
            status,
            [("content-type", "application/json"), ("content-length", str(len(data))), *headers],
        )
        await self.send(data)
        await self.end()

    async def _send(self, event: h11.Event) -> None:
        try:
            data = self._conn.send(event)
        except h11.LocalProtocolError as exc:
            raise ClientGone(f"cannot answer: {exc}") from exc
        if data:
            try:
                self._writer.write(data)
                await self._writer.drain()
            except (ConnectionError, RuntimeError) as exc:
                raise ClientGone(str(exc)) from exc


Handler = Callable[[Exchange], Awaitable[None]]
Admit = Callable[[Exchange], Awaitable[bool]]
TooLarge = Callable[[int], Any]
Malformed = Callable[[int, str], Any]


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handle: Handler,
    *,
    admit: Admit,
    max_body: int,
    too_large: TooLarge,
    malformed: Malformed,
    head_timeout: float,
    idle_timeout: float,
) -> None:
    """Serve requests on one connection until either side closes it. `admit` sees each
    request's head first; when it answers (returns False) the connection is closed unread.
    A body over `max_body` is answered with `too_large(max_body)` (a JSON body, status 413)
    and the connection closed; a request h11 refuses, with `malformed(status, reason)`.
    A head must arrive within `head_timeout` seconds (of the connection's opening for the
    first request, of its first byte for the next ones), and a kept-alive connection may
    wait `idle_timeout` for the next request: past either, the connection is closed."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    first = True
    try:
        while True:
            try:
                event = await _head(conn, reader, head_timeout, None if first else idle_timeout)
            except h11.RemoteProtocolError as exc:
                await _answer_malformed(conn, writer, exc, malformed)
                await _linger(reader, writer)
                return
            except TimeoutError:
                return  # a head too slow, or a connection idle too long: closed unanswered
            first = False
            if not isinstance(event, h11.Request):
                return  # closed by the client
            if _head_size(event) > MAX_HEAD_BYTES:  # h11 lets up to one more read through
                await _refuse(conn, writer, event, 431, malformed(431, "request head too large"))
                await _linger(reader, writer)
                return
            exchange = Exchange(conn, writer, event, b"")
            try:
                if not await admit(exchange):
                    await _linger(reader, writer)
                    return
            except ClientGone:
                return
            length = _content_length(event)
            if length is not None and length > max_body:
                await _refuse(conn, writer, event, 413, too_large(max_body))
                await _linger(reader, writer)
                return
            if conn.they_are_waiting_for_100_continue:
                writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            chunks: list[bytes] = []
            size = 0
            while True:
                try:
                    part = await _next(conn, reader)
                except h11.RemoteProtocolError:
                    return
                if isinstance(part, h11.Data):
                    size += len(part.data)
                    if size > max_body:
                        await _refuse(conn, writer, event, 413, too_large(max_body))
                        return
                    chunks.append(part.data)
                elif isinstance(part, h11.EndOfMessage):
                    break
                else:
                    return
            exchange.body = b"".join(chunks)
            try:
                await handle(exchange)
            except ClientGone:
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _head(
    conn: h11.Connection, reader: asyncio.StreamReader, head_timeout: float, idle: float | None
) -> Any:
    """The next request's head, as `_next`; `TimeoutError` when it is not whole within
    `head_timeout` (counted from its first byte when `idle` is given, which bounds the wait
    for that byte)."""
    loop = asyncio.get_running_loop()
    waiting = idle is not None and not conn.trailing_data[0]
    wait = idle if idle is not None and waiting else head_timeout
    async with asyncio.timeout_at(loop.time() + wait) as cm:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return None if event is h11.PAUSED else event
            data = await reader.read(READ_BYTES)
            conn.receive_data(data)
            if waiting and data:  # the head has begun: it gets `head_timeout` from here
                waiting = False
                cm.reschedule(loop.time() + head_timeout)


async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    """The next event; `h11.RemoteProtocolError` for a request h11 cannot take."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(READ_BYTES))
            continue
        if event is h11.PAUSED:
            return None
        return event


def _head_size(request: h11.Request) -> int:
    return len(request.target) + sum(len(k) + len(v) + 4 for k, v in request.headers)


def _content_length(request: h11.Request) -> int | None:
    for key, value in request.headers:
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    request: h11.Request,
    status: int,
    body: Any,
) -> None:
    exchange = Exchange(conn, writer, request, b"")
    with contextlib.suppress(ClientGone):
        await exchange.respond(status, body, [("connection", "close")])


async def _answer_malformed(
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    exc: h11.RemoteProtocolError,
    malformed: Malformed,
) -> None:
    """Answer a request h11 refused (400, or 431 for a head too large), where h11 still
    lets the server speak (nothing was answered on this connection's current request)."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    data = json.dumps(malformed(exc.error_status_hint, str(exc))).encode()
    head = [
        ("content-type", "application/json"),
        ("content-length", str(len(data))),
        ("connection", "close"),
    ]
    with contextlib.suppress(h11.LocalProtocolError, ConnectionError, RuntimeError):
        writer.write(
            conn.send(h11.Response(status_code=exc.error_status_hint, headers=head)) or b""
        )
        writer.write(conn.send(h11.Data(data=data)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then drain (a bounded amount, for a bounded time) what the client still
    sends of a request that was answered unread."""
    with contextlib.suppress(Exception):
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER_SECONDS):
            left = LINGER_BYTES
            while left > 0:
                data = await reader.read(min(READ_BYTES, left))
                if not data:
                    return
                left -= len(data)
