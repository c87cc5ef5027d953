"""A small HTTP/1.1 server connection on asyncio streams, with h11 doing the protocol.

One `serve_connection` per accepted socket: it reads each request whole (bounded by
`max_body`), hands it to the handler as an `Exchange`, and keeps the connection alive
between requests as the client asks. The handler answers through the exchange, streaming
the body in pieces; a client that hangs up mid-answer raises `ClientGone`.
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


class ClientGone(Exception):
    """The client closed the connection (or broke the protocol) mid-exchange."""


class Exchange:
    """One request, read whole, and the means to answer it."""

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
TooLarge = Callable[[int], Any]


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handle: Handler,
    *,
    max_body: int,
    too_large: TooLarge,
) -> None:
    """Serve requests on one connection until either side closes it. A body over
    `max_body` is answered with `too_large(max_body)` (a JSON body, status 413) and the
    connection closed."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    try:
        while True:
            event = await _next(conn, reader)
            if not isinstance(event, h11.Request):
                return  # closed, or a protocol error already answered
            length = _content_length(event)
            if length is not None and length > max_body:
                await _refuse(conn, writer, event, 413, too_large(max_body))
                return
            if conn.they_are_waiting_for_100_continue:
                writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            chunks: list[bytes] = []
            size = 0
            while True:
                part = await _next(conn, reader)
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
            exchange = Exchange(conn, writer, event, b"".join(chunks))
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


async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return None
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(READ_BYTES))
            continue
        if event is h11.PAUSED:
            return None
        return event


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
