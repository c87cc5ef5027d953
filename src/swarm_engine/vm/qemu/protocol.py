"""Host side of the framed host<->guest protocol over the virtio-serial port.

A frame is an 8-byte header `>II` (JSON length, payload length), a JSON object and a
raw payload. The guest agent (`guest/agent.c`) mirrors this. Requests carry an `id`;
replies and output frames carry the same `id`.

The guest is not trusted (it runs whatever an agent's code does as root inside the VM),
so everything it sends is checked before it is kept: header and payload sizes are capped
per frame (`MAX_HEADER`, `MAX_CHUNK`; `MAX_FILE` only for the reply to a `get`), each
request buffers at most `QUEUE_FRAMES` frames (then the router waits, and the guest's
writes block), and the header must be a reply the host is waiting for, with the right
types. Anything else is a `ProtocolError`: the channel closes with that reason and
`on_violation` runs (`QemuVM` kills the VM). Memory per VM stays bounded by roughly
`MAX_FILE` (while a `get` is pending) plus `QUEUE_FRAMES * MAX_CHUNK` per pending request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

from swarm_engine.errors import VMError
from swarm_engine.vm.base import MAX_FILE_BYTES

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">II")
MAX_HEADER = 64 * 1024
"""A frame's JSON header. The guest's are under 5 KiB (an error with a path is the longest)."""
MAX_CHUNK = 256 * 1024
"""A frame's payload, except the reply to a `get`. Output comes in 64 KiB chunks."""
MAX_FILE = MAX_FILE_BYTES
"""The largest file `put_file`/`get_file` move (one frame each way)."""
QUEUE_FRAMES = 32
"""Frames one request buffers before the router waits for its reader (backpressure)."""
REPLIES = frozenset({"ok", "error", "out", "exit"})
FINAL = frozenset({"ok", "error", "exit"})
"""After one of these, a request gets nothing more."""

Frame = tuple[dict[str, Any], bytes]


class ChannelClosed(VMError):
    """The guest went away (QEMU exited or the channel broke)."""


class ProtocolError(VMError):
    """The guest sent something the protocol does not allow (the VM is then ended)."""


def encode(header: dict[str, Any], payload: bytes = b"") -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    return HEADER.pack(len(raw), len(payload)) + raw + payload


async def _exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        raise ChannelClosed("guest channel closed in the middle of a frame") from exc


def decode_header(raw: bytes) -> dict[str, Any]:
    """The JSON header of a frame, which must be an object."""
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"frame header is not JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"frame header is a JSON {type(header).__name__}, not an object")
    return header


async def read_head(reader: asyncio.StreamReader) -> tuple[dict[str, Any], int] | None:
    """The next frame's header and payload length (the payload is still to be read), or
    None at a clean end of stream."""
    try:
        head = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ChannelClosed("guest channel closed in the middle of a frame") from exc
        return None
    jlen, plen = HEADER.unpack(head)
    if jlen > MAX_HEADER:
        raise ProtocolError(f"frame header of {jlen} bytes (limit {MAX_HEADER})")
    if plen > MAX_FILE:
        raise ProtocolError(f"frame payload of {plen} bytes (limit {MAX_FILE})")
    return decode_header(await _exactly(reader, jlen)), plen


async def read_frame(reader: asyncio.StreamReader, max_payload: int = MAX_CHUNK) -> Frame | None:
    """The next frame, or None at a clean end of stream."""
    head = await read_head(reader)
    if head is None:
        return None
    header, plen = head
    if plen > max_payload:
        raise ProtocolError(f"{_kind(header)} frame with {plen} bytes (limit {max_payload})")
    return header, await _exactly(reader, plen)


def _kind(header: dict[str, Any]) -> str:
    kind = header.get("t")
    return repr(kind)[:40] if isinstance(kind, str) else "untyped"


def check_reply(header: dict[str, Any]) -> tuple[str, int]:
    """(type, id) of a guest reply whose fields have the types the host relies on."""
    kind, rid = header.get("t"), header.get("id")
    if not isinstance(kind, str) or kind not in REPLIES:
        raise ProtocolError(f"unknown frame type {_kind(header)}")
    if not isinstance(rid, int) or isinstance(rid, bool):
        raise ProtocolError(f"{kind} frame without an integer id")
    if kind == "out" and header.get("stream") not in ("stdout", "stderr"):
        raise ProtocolError("out frame without a stream")
    if kind == "exit":
        code = header.get("code")
        if not isinstance(code, int) or isinstance(code, bool) or not -(2**31) <= code < 2**31:
            raise ProtocolError("exit frame without a 32-bit integer code")
        if not isinstance(header.get("timed_out", False), bool):
            raise ProtocolError("exit frame whose timed_out is not a boolean")
    if kind == "error" and not isinstance(header.get("message", ""), str):
        raise ProtocolError("error frame whose message is not a string")
    return kind, rid


class Replies:
    """The frames of one request, in order; None once the channel closed. At most
    `QUEUE_FRAMES` wait here: beyond that the router waits until the reader takes one."""

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self.done = False
        """Set once a final frame came (anything after it breaks the protocol)."""
        self._frames: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._room = asyncio.Event()
        self._abandoned = False

    async def get(self) -> Frame | None:
        frame = await self._frames.get()
        self._room.set()
        return frame

    async def put(self, frame: Frame) -> None:
        while self._frames.qsize() >= QUEUE_FRAMES and not self._abandoned:
            self._room.clear()
            await self._room.wait()
        if not self._abandoned:
            self._frames.put_nowait(frame)

    def end(self) -> None:
        self._frames.put_nowait(None)  # unbounded underneath: the end marker always fits

    def abandon(self) -> None:
        """Its reader is gone: drop what waits and free a router waiting for room."""
        self._abandoned = True
        self._room.set()


class Channel:
    """Multiplexes requests over one stream; one reader task routes replies by `id`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._next_id = 0
        self._pending: dict[int, Replies] = {}
        self._abandoned: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self.closed = asyncio.Event()
        self.close_reason = "closed"
        self.violation: str | None = None
        """Why the guest broke the protocol, if it did."""
        self.on_violation: Callable[[str], None] | None = None
        """Called once (from the router) when the guest breaks the protocol."""

    async def handshake(self, timeout: float) -> dict[str, Any]:
        """Wait for the guest's `ready` frame, then start routing replies."""
        frame = await asyncio.wait_for(read_frame(self._reader, 0), timeout)
        if frame is None:
            raise ChannelClosed("guest closed the channel before it was ready")
        header, _ = frame
        if header.get("t") != "ready":
            raise ProtocolError(f"guest said {_kind(header)} instead of 'ready'")
        if header.get("version") != PROTOCOL_VERSION:
            raise VMError(
                f"guest agent speaks protocol {str(header.get('version'))[:20]}, host"
                f" {PROTOCOL_VERSION} (rebuild the image: swarm-engine vm image build)"
            )
        self.start()
        return header

    def start(self) -> None:
        """Start routing replies (a restored guest sent its `ready` long ago)."""
        if self._task is None:
            self._task = asyncio.create_task(self._route(), name="qemu-channel")

    async def _route(self) -> None:
        try:
            while (head := await read_head(self._reader)) is not None:
                header, plen = head
                kind, rid = check_reply(header)
                replies = self._pending.get(rid)
                if replies is None and rid not in self._abandoned:
                    raise ProtocolError(f"{kind} frame for id {rid}, which is not waiting")
                if replies is not None and replies.done:
                    raise ProtocolError(f"{kind} frame for id {rid}, which already ended")
                limit = replies.max_payload if replies is not None and kind == "ok" else MAX_CHUNK
                if plen > limit:
                    raise ProtocolError(f"{kind} frame with {plen} bytes (limit {limit})")
                payload = await _exactly(self._reader, plen)
                if replies is not None:
                    replies.done = kind in FINAL
                    await replies.put((header, payload))
        except ProtocolError as exc:
            self.violation = str(exc)
            self.close_reason = f"the guest broke the protocol: {exc}"
        except (OSError, VMError) as exc:
            self.close_reason = str(exc)
        except Exception as exc:  # a bug here must still close the channel, loudly
            log.exception("qemu channel router failed")
            self.violation = f"host error: {exc!r}"
            self.close_reason = f"the channel failed: {exc!r}"
        finally:
            self.closed.set()
            for replies in self._pending.values():
                replies.end()
        if self.violation is not None and self.on_violation is not None:
            self.on_violation(self.violation)

    @contextlib.asynccontextmanager
    async def request(
        self, header: dict[str, Any], payload: bytes = b"", *, max_reply: int = MAX_CHUNK
    ) -> AsyncIterator[Replies]:
        """Send a request; yields its replies (`get()` gives None once the channel closed).
        `max_reply` caps the payload of its `ok` reply."""
        if self.closed.is_set():
            raise ChannelClosed(f"guest channel is closed ({self.close_reason})")
        self._next_id += 1
        rid = self._next_id
        replies = Replies(max_reply)
        self._pending[rid] = replies
        try:
            await self.send({**header, "id": rid}, payload)
            yield replies
        finally:
            del self._pending[rid]
            if not replies.done:
                self._abandoned.add(rid)  # the guest may still answer it; drop that
            replies.abandon()

    async def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        async with self._write_lock:
            try:
                self._writer.write(encode(header, payload))
                await self._writer.drain()
            except (OSError, RuntimeError) as exc:
                raise ChannelClosed(f"cannot write to the guest: {exc}") from exc

    async def call(
        self,
        header: dict[str, Any],
        payload: bytes = b"",
        *,
        max_reply: int = MAX_CHUNK,
        timeout: float | None = None,
    ) -> Frame:
        """One request, one reply (`ok`); `error` replies become `VMError`. Raises
        TimeoutError if no reply came within `timeout` seconds."""
        async with self.request(header, payload, max_reply=max_reply) as replies:
            frame = await asyncio.wait_for(replies.get(), timeout)
        if frame is None:
            raise ChannelClosed(f"guest went away ({self.close_reason})")
        reply, data = frame
        if reply["t"] == "error":
            raise VMError(str(reply.get("message", "guest error"))[:1000])
        if reply["t"] != "ok":
            self.fail(f"{reply['t']} frame in reply to {header.get('t')!r}")
            raise ChannelClosed(f"guest went away ({self.close_reason})")
        return reply, data

    def fail(self, problem: str) -> None:
        """A violation found outside the router (e.g. a reply of the wrong kind): close
        the channel as the router would have."""
        if self.violation is None:
            self.violation = problem
            self.close_reason = f"the guest broke the protocol: {problem}"
            if self._task is not None:
                self._task.cancel()
            self.closed.set()
            for replies in self._pending.values():
                replies.end()
            if self.on_violation is not None:
                self.on_violation(problem)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._writer.close()
        with contextlib.suppress(OSError, RuntimeError):
            await self._writer.wait_closed()
        self.closed.set()
