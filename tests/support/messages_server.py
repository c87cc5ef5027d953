"""A scripted stand-in for the Anthropic Messages API, for tests.

`MessagesServer` listens on 127.0.0.1 in a background thread and answers
`POST /v1/messages` (also `?beta=true`, as Claude Code sends it) from a script: each
request takes the next step, which is a response body (a dict, sent as JSON with status
200), a `Reply` (any status, headers, raw bytes, a delay), or a callable that sees the
`Recorded` request and returns either. When the script is empty the `fallback` step
answers (by default a 500 that also lands in `errors`). Requests with `"stream": true` get
the same message as server-sent events. `POST /v1/messages/count_tokens` and
`GET /v1/models` are answered without touching the script (they are free).

Every request (headers and JSON body) is kept in `requests`; every reply in `replies`.
Callables run in the server thread: to look into a VM from one, use
`asyncio.run_coroutine_threadsafe(vm.get_file(...), loop).result()`.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import socket
import struct
import termios
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ids = itertools.count(1)
COUNT_TOKENS = 42
"""What `POST /v1/messages/count_tokens` answers (it is free: no usage)."""


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes

    @property
    def api_key(self) -> str | None:
        """The key the client sent (`x-api-key`, or `authorization: Bearer ...`)."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        auth = self.headers.get("authorization", "")
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []

    def tool_results(self) -> list[dict[str, Any]]:
        """The tool_result blocks of the last user message."""
        if not self.messages:
            return []
        content = self.messages[-1].get("content")
        if not isinstance(content, list):
            return []
        return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None
    raw: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay: float = 0.0
    drip: float = 0.0
    """Seconds between the body's bytes, sent one at a time after the headers (a slow
    endpoint that is never silent for long)."""
    cut: int | None = None
    """Send only this many bytes of the body (its whole length still announced in
    `content-length`), then close the connection: a body cut short."""
    reset: bool = False
    """With `cut`: close with a TCP reset (RST), not a FIN."""


Step = Reply | dict[str, Any] | Callable[[Recorded], "Reply | dict[str, Any]"]


def usage(
    input_tokens: int = 10,
    output_tokens: int = 5,
    cache_creation_input_tokens: int = 0,
    cache_read_input_tokens: int = 0,
) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_creation_input_tokens,
        "cache_read_input_tokens": cache_read_input_tokens,
    }


def message(
    content: Sequence[dict[str, Any]],
    stop_reason: str = "end_turn",
    *,
    used: Mapping[str, int] | None = None,
    model: str = "claude-sonnet-4-6",
) -> dict[str, Any]:
    return {
        "id": f"msg_{next(_ids):06d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": list(content),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": dict(used or usage()),
    }


def text(answer: str, *, used: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A final answer (stop_reason end_turn)."""
    return message([{"type": "text", "text": answer}], "end_turn", used=used)


def tool_use(
    *calls: tuple[str, Mapping[str, Any]],
    say: str | None = None,
    used: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """A turn that calls tools: `tool_use(("bash", {"command": "ls"}), say="Looking")`."""
    blocks: list[dict[str, Any]] = [{"type": "text", "text": say}] if say else []
    for name, args in calls:
        blocks.append(
            {"type": "tool_use", "id": f"toolu_{next(_ids):06d}", "name": name, "input": dict(args)}
        )
    return message(blocks, "tool_use", used=used)


def api_error(
    status: int, kind: str, text_: str = "", headers: Mapping[str, str] | None = None
) -> Reply:
    """An error the way the API sends it: `{"type": "error", "error": {...}}`."""
    body = {"type": "error", "error": {"type": kind, "message": text_ or kind}}
    return Reply(status=status, body=body, headers=dict(headers or {}))


class MessagesServer:
    """Use as a context manager; `url` is the base URL to give the SDK. With `api_key`
    set, a request carrying another key (or none) gets a 401 and leaves the script alone."""

    def __init__(
        self,
        script: Iterable[Step] = (),
        fallback: Step | None = None,
        api_key: str | None = None,
    ) -> None:
        self._script: list[Step] = list(script)
        self.fallback = fallback
        self.api_key = api_key
        self._lock = threading.Lock()
        self.requests: list[Recorded] = []
        self.replies: list[tuple[int, Any]] = []
        self.errors: list[str] = []
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def _serve(self) -> None:
        self._httpd.serve_forever(poll_interval=0.02)  # so that stop() returns promptly

    def push(self, *steps: Step) -> None:
        with self._lock:
            self._script.extend(steps)

    def start(self) -> MessagesServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MessagesServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def message_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.split("?", 1)[0] == "/v1/messages"]

    def reported_usage(self) -> dict[str, int]:
        """Sums of the usage this server reported in its successful (200) replies."""
        totals = dict.fromkeys(usage(), 0)
        for status, body in self.replies:
            if status == 200 and isinstance(body, dict) and isinstance(body.get("usage"), dict):
                for key in totals:
                    totals[key] += int(body["usage"].get(key) or 0)
        return totals

    # -- called from the server thread ---------------------------------------------------

    def _next(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            path = request.path.split("?", 1)[0]
            if self.api_key is not None and request.api_key != self.api_key:
                step: Step = api_error(401, "authentication_error", "invalid x-api-key")
            elif request.method == "POST" and path == "/v1/messages/count_tokens":
                step = {"input_tokens": COUNT_TOKENS}  # free: no usage, no turn of the script
            elif request.method == "GET" and path.startswith("/v1/models"):
                step = {"data": [{"type": "model", "id": "claude-sonnet-4-6"}], "has_more": False}
            elif request.method != "POST" or path != "/v1/messages":
                step = api_error(404, "not_found_error", f"no route {request.path}")
            elif self._script:
                step = self._script.pop(0)
            elif self.fallback is not None:
                step = self.fallback
            else:
                self.errors.append(f"script exhausted at request {len(self.requests)}")
                step = api_error(500, "api_error", "test script exhausted")
        if callable(step):
            try:
                step = step(request)
            except Exception as exc:  # reported to the test through `errors`
                self.errors.append(f"step callable failed: {type(exc).__name__}: {exc}")
                step = api_error(500, "api_error", f"step callable failed: {exc}")
        reply = step if isinstance(step, Reply) else Reply(body=step)
        with self._lock:
            self.replies.append((reply.status, reply.body))
        return reply


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: MessagesServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up (timeouts in tests) are expected; stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        request = Recorded(
            self.command,
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            body,
            raw,
        )
        owner = self.server.owner
        reply = owner._next(request)
        if reply.delay and owner._stopping.wait(reply.delay):
            return
        streaming = isinstance(body, dict) and body.get("stream") is True
        try:
            if streaming and reply.status == 200 and reply.raw is None:
                self._send_events(reply)
            else:
                self._send(reply)
        except OSError:
            return

    def _send(self, reply: Reply) -> None:
        data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
        if reply.cut is not None:
            self._send_cut(reply, data)
            return
        self.send_response(reply.status)
        self.send_header("content-type", reply.content_type)
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", f"req_{next(_ids):06d}")
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not reply.drip:
            self.wfile.write(data)
            return
        for i in range(len(data)):
            if self.server.owner._stopping.wait(reply.drip):
                return
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()

    def _send_cut(self, reply: Reply, data: bytes) -> None:
        """The head announcing all of `data`, `reply.cut` bytes of it, then a FIN or RST."""
        assert reply.cut is not None
        self.send_response(reply.status)
        self.send_header("content-type", reply.content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        sock = self.connection
        sock.sendall(data[: reply.cut])
        self.close_connection = True
        if not reply.reset:
            sock.shutdown(socket.SHUT_RDWR)
            return
        # a reset discards what is still queued: wait (briefly, on loopback) until the
        # client's kernel has acknowledged every byte sent, so it reads them, then the RST
        stopping = self.server.owner._stopping
        for _ in range(2000):
            if _unacked(sock) == 0 or stopping.wait(0.001):  # sleep-ok: bounded, ~never
                break
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def _send_events(self, reply: Reply) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.end_headers()
        for event, data in sse_events(reply.body):
            self.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()
        self.close_connection = True


def _unacked(sock: socket.socket) -> int:
    """Bytes sent on `sock` the peer has not acknowledged yet (Linux's SIOCOUTQ)."""
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", buf)[0])


def sse_events(msg: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The streaming form of a complete message, as the API sends it."""
    used = dict(msg.get("usage") or {})
    start = {**msg, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**used, "output_tokens": min(1, int(used.get("output_tokens", 0)))}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    for index, block in enumerate(msg.get("content") or []):
        if block.get("type") == "tool_use":
            empty = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        else:
            empty = {**block, "text": ""}
            delta = {"type": "text_delta", "text": block.get("text", "")}
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": empty},
            )
        )
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": msg.get("stop_reason"), "stop_sequence": None},
                "usage": {"output_tokens": int(used.get("output_tokens", 0))},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events
