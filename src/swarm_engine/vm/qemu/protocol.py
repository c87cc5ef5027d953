"""Host side of the framed host<->guest protocol over the virtio-serial port.

A frame is an 8-byte header `>II` (JSON length, payload length), a JSON object and a
raw payload. The guest agent (`guest/agent.py`) mirrors this; a unit test keeps the two
in step. Requests carry an `id`; replies and output frames carry the same `id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

from swarm_engine.errors import VMError

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">II")
MAX_JSON = 16 * 1024 * 1024
MAX_PAYLOAD = 2 * 1024 * 1024 * 1024

Frame = tuple[dict[str, Any], bytes]


def encode(header: dict[str, Any], payload: bytes = b"") -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    return HEADER.pack(len(raw), len(payload)) + raw + payload


async def read_frame(reader: asyncio.StreamReader) -> Frame | None:
    """The next frame, or None at a clean end of stream."""
    try:
        head = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise VMError("guest channel closed in the middle of a frame") from exc
        return None
    jlen, plen = HEADER.unpack(head)
    if jlen > MAX_JSON or plen > MAX_PAYLOAD:
        raise VMError(f"guest sent an oversized frame ({jlen}, {plen})")
    try:
        body = await reader.readexactly(jlen + plen)
    except asyncio.IncompleteReadError as exc:
        raise VMError("guest channel closed in the middle of a frame") from exc
    header = json.loads(body[:jlen])
    if not isinstance(header, dict):
        raise VMError("guest sent a frame whose header is not an object")
    return header, body[jlen:]


class ChannelClosed(VMError):
    """The guest went away (QEMU exited or the channel broke)."""


class Channel:
    """Multiplexes requests over one stream; one reader task routes replies by `id`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._next_id = 0
        self._queues: dict[int, asyncio.Queue[Frame | None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self.closed = asyncio.Event()
        self.close_reason = "closed"

    async def handshake(self, timeout: float) -> dict[str, Any]:
        """Wait for the guest's `ready` frame, then start routing replies."""
        frame = await asyncio.wait_for(read_frame(self._reader), timeout)
        if frame is None:
            raise ChannelClosed("guest closed the channel before it was ready")
        header, _ = frame
        if header.get("t") != "ready":
            raise VMError(f"guest said {header.get('t')!r} instead of 'ready'")
        if header.get("version") != PROTOCOL_VERSION:
            raise VMError(
                f"guest agent speaks protocol {header.get('version')}, host {PROTOCOL_VERSION}"
                " (rebuild the image: swarm-engine vm image build)"
            )
        self.start()
        return header

    def start(self) -> None:
        """Start routing replies (a restored guest sent its `ready` long ago)."""
        if self._task is None:
            self._task = asyncio.create_task(self._route(), name="qemu-channel")

    async def _route(self) -> None:
        try:
            while (frame := await read_frame(self._reader)) is not None:
                queue = self._queues.get(int(frame[0].get("id", -1)))
                if queue is not None:
                    queue.put_nowait(frame)
        except (OSError, VMError, ValueError) as exc:
            self.close_reason = str(exc)
        finally:
            self.closed.set()
            for queue in self._queues.values():
                queue.put_nowait(None)

    @contextlib.asynccontextmanager
    async def request(
        self, header: dict[str, Any], payload: bytes = b""
    ) -> AsyncIterator[asyncio.Queue[Frame | None]]:
        """Send a request; yields the queue its replies arrive on (None when closed)."""
        if self.closed.is_set():
            raise ChannelClosed(f"guest channel is closed ({self.close_reason})")
        self._next_id += 1
        rid = self._next_id
        queue: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._queues[rid] = queue
        try:
            await self.send({**header, "id": rid}, payload)
            yield queue
        finally:
            self._queues.pop(rid, None)

    async def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        async with self._write_lock:
            try:
                self._writer.write(encode(header, payload))
                await self._writer.drain()
            except (OSError, RuntimeError) as exc:
                raise ChannelClosed(f"cannot write to the guest: {exc}") from exc

    async def call(self, header: dict[str, Any], payload: bytes = b"") -> Frame:
        """One request, one reply (`ok`); `error` replies become `VMError`."""
        async with self.request(header, payload) as queue:
            frame = await queue.get()
        if frame is None:
            raise ChannelClosed(f"guest went away ({self.close_reason})")
        reply, data = frame
        if reply.get("t") == "error":
            raise VMError(str(reply.get("message", "guest error")))
        return reply, data

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._writer.close()
        with contextlib.suppress(OSError, RuntimeError):
            await self._writer.wait_closed()
        self.closed.set()
