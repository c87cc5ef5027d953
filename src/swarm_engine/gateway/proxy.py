"""The gateway of one step: a listener on the host's loopback that only that step's VM can
reach, which takes the step's token, puts the host's key in its place and forwards to the
endpoint the host configured.

What it forwards: `POST /v1/messages` (metered: the usage of every response is counted,
priced and held against the step's budget), `POST /v1/messages/count_tokens` and
`GET /v1/models[/<id>]` (free). Anything else is answered by the gateway itself with a 404
(400 for a path with dot segments) and never leaves the host. The token and the path are
checked from the request's head, before its body is read. Requests that carry
`mcp_servers` or server tools are refused unless the host allows them. Responses stream
through as they arrive, JSON and server-sent events alike, byte for byte (only the transfer
framing is the gateway's); should the endpoint ever echo the host's key (or anything
key-shaped), it is replaced by `[REDACTED]` on the way, in the body and in every header.

Answers of its own are API-style errors (`{"type": "error", "error": {...}}`), so every
client reports them as it reports the API's: 401 for a missing or foreign token, 402
`billing_error` once the budget is used up (the step is then stopped), 404, 413, 400 for a
model without a price under a USD budget, a server tool, a body holding a key twice
(at any depth) or one that is not UTF-8 JSON without a byte-order mark, 503 for a request with the token past `max_connections`, 502/504 when the
endpoint cannot be reached.

Connections are bounded in two pools: those that have not yet presented the step's token
(any local process may open them; at most `max_pending`, a new one closing the oldest, each
closed unless its head arrives within `head_timeout`) and those that have (at most
`max_connections`, each closed after `idle_timeout` between requests). Connections
without the token can so never lock the step out of its gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hmac
import logging
import random
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2

from swarm_engine.agents.claude.redact import Redactor
from swarm_engine.errors import AgentError
from swarm_engine.gateway.http11 import ClientGone, Exchange, serve_connection
from swarm_engine.gateway.meter import COUNTS, Counted, EventUsage, Meter, json_usage
from swarm_engine.gateway.request_log import RequestLog, clip
from swarm_engine.gateway.scrub import StreamScrubber
from swarm_engine.gateway.settings import GatewaySettings
from swarm_engine.jsonwire import NotUtf8Json, wire_text
from swarm_engine.models import Usage
from swarm_engine.records import DuplicateKey, loads_unique

log = logging.getLogger(__name__)

TOKEN_PREFIX = "sk-swarm-"
MESSAGES = "/v1/messages"
FREE_PATHS = re.compile(r"^/v1/(messages/count_tokens|models(/[A-Za-z0-9_-][A-Za-z0-9._-]*)?)\Z")
DOT_SEGMENT = re.compile(r"(^|/)\.{1,2}(/|$)|%2e", re.IGNORECASE)
SERVER_TOOL = re.compile(r"^(web_search|web_fetch|code_execution)_")
MAX_METERED_BODY = 64 * 1024 * 1024
"""A JSON message response larger than this is passed on but not read for usage."""
PARSE_ON_LOOP = 256 * 1024
"""A request body larger than this is parsed in a thread, not on the event loop."""
DROP_REQUEST = frozenset(
    {"host", "x-api-key", "authorization", "content-length", "connection", "keep-alive",
     "proxy-authorization", "proxy-connection", "te", "trailer", "transfer-encoding",
     "upgrade", "accept-encoding", "expect"}
)  # fmt: skip
DROP_RESPONSE = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
     "proxy-authenticate", "trailer", "upgrade"}
)  # fmt: skip

Say = Callable[[str], None]
CUT_OFF = "cut off: the step ended before its answer was through"
UNREADABLE = "usage not readable"
"""The error of an answer (200) whose usage could not be read at all."""


def api_error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": f"swarm-engine gateway: {message}"}}


class StepGateway:
    """Serves one step. `start()` takes a port of `settings.ports`; `close()` ends every
    connection and frees it, after which the token is worthless."""

    def __init__(
        self,
        *,
        api_key: str,
        upstream: str,
        settings: GatewaySettings,
        meter: Meter,
        say: Say | None = None,
    ) -> None:
        self.token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.port = 0
        self.meter = meter
        self.exceeded = asyncio.Event()
        """Set when a request was refused for the budget: the engine stops the step."""
        self.stop_message: str | None = None
        self.log = RequestLog()
        self._key = api_key
        self._upstream = upstream.rstrip("/")
        self._settings = settings
        self._say = say
        self._redactor = Redactor([api_key, self.token])
        self._server: asyncio.Server | None = None
        self._client: httpx2.AsyncClient | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._pending: dict[asyncio.Task[Any], None] = {}
        """Connections not yet shown the token, oldest first (a subset of `_connections`)."""
        self._authorized: set[asyncio.Task[Any]] = set()
        self._in_flight = asyncio.Semaphore(settings.max_in_flight)

    # -- life ------------------------------------------------------------------------------
    async def start(self) -> int:
        sock = _listen(self._settings.ports)
        self.port = sock.getsockname()[1]
        self._client = httpx2.AsyncClient(
            timeout=httpx2.Timeout(self._settings.request_timeout, connect=30.0),
            follow_redirects=False,
        )
        self._server = await asyncio.start_server(self._connection, sock=sock)
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._client is not None:
            await self._client.aclose()
        self._final_verdict()

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.log.records

    def _final_verdict(self) -> None:
        """Requests in flight together may have gone over the budget (by at most
        `max_in_flight` answers) without any being refused: the step is over it all the
        same, and is stopped for it."""
        reason = self.meter.over_budget(above=True)
        if reason is None or self.stop_message is not None:
            return
        self.stop_message = (
            f"model API budget exceeded: {reason}; its answers went over it, no request was refused"
        )
        self._tell(f"model API: {reason}: the step is over its budget")
        self.exceeded.set()

    def vm_env(self, host: str) -> dict[str, str]:
        """What a VM that reaches the host at `host` gets: the gateway and its token."""
        return {"ANTHROPIC_BASE_URL": f"http://{host}:{self.port}", "ANTHROPIC_API_KEY": self.token}

    def usage(self) -> Usage:
        """A copy of what the step used so far."""
        return dataclasses.replace(self.meter.usage)

    # -- one connection, one request -------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        while len(self._pending) >= self._settings.max_pending:
            oldest = next(iter(self._pending))  # its end, when cancelled, is its own
            del self._pending[oldest]
            oldest.cancel()
            self.meter.evicted += 1
        self._connections.add(task)
        self._pending[task] = None
        try:
            await serve_connection(
                reader,
                writer,
                self._handle,
                admit=self._admit,
                max_body=self._settings.max_request_mb * 1024 * 1024,
                too_large=lambda n: api_error(
                    "request_too_large", f"request body over {n // (1024 * 1024)} MB"
                ),
                malformed=lambda status, reason: api_error(
                    "invalid_request_error", f"malformed request ({status}): {reason}"
                ),
                head_timeout=self._settings.head_timeout,
                idle_timeout=self._settings.idle_timeout,
            )
        except asyncio.CancelledError:
            # only `close()` and an eviction cancel it; ending quietly spares asyncio's
            # stream callback an error report about a cancelled connection task
            return
        finally:
            self._connections.discard(task)
            self._pending.pop(task, None)
            self._authorized.discard(task)

    async def _admit(self, ex: Exchange) -> bool:
        """The request's head, before its body is read: the token, then the path. A
        refused request is answered here and its connection closed, its body unread."""
        close = [("connection", "close")]
        if not self._token_ok(ex):
            self.meter.unauthorized += 1  # counted only: the VM could flood the log
            await ex.respond(
                401,
                api_error(
                    "authentication_error",
                    "invalid x-api-key: this gateway takes only the token of its own step",
                ),
                close,
            )
            return False
        if not await self._authorize(ex):
            return False
        path = ex.target.split("?", 1)[0]
        record: dict[str, Any] = {"method": ex.method, "path": path}
        metered = ex.method == "POST" and path == MESSAGES
        free = (ex.method == "POST" and path.startswith(MESSAGES + "/")) or ex.method == "GET"
        shown = clip(path)
        if DOT_SEGMENT.search(path):
            await self._refuse(ex, record, 400, "invalid_request_error",
                               f"{ex.method} {shown}: dot segments are not allowed in a path",
                               headers=close)  # fmt: skip
        elif (odd := not_ascii_header(ex.headers)) is not None:
            await self._refuse(ex, record, 400, "invalid_request_error",
                               f"request header {clip(odd)!r} holds bytes that are not"
                               " ASCII; it is not forwarded", headers=close)  # fmt: skip
        elif not metered and not (free and FREE_PATHS.match(path)):
            await self._refuse(ex, record, 404, "not_found_error",
                               f"{ex.method} {shown} is not forwarded (only {MESSAGES}, "
                               f"{MESSAGES}/count_tokens and /v1/models)",
                               headers=close)  # fmt: skip
        else:
            return True
        self.log.add(record)
        return False

    async def _authorize(self, ex: Exchange) -> bool:
        """Move the connection of a request with the token from the pending pool to the
        step's own, if it has room: else answer 503 and close it."""
        task = asyncio.current_task()
        if task in self._authorized:
            return True  # shown the token before
        if task not in self._pending:
            return False  # evicted meanwhile: it ends unanswered
        del self._pending[task]
        limit = self._settings.max_connections
        if len(self._authorized) < limit:
            self._authorized.add(task)
            return True
        self.meter.busy += 1
        message = (
            f"more than {limit} connections open to this step's gateway ([gateway] max_connections)"
        )
        await ex.respond(503, api_error("overloaded_error", message), [("connection", "close")])
        return False

    async def _handle(self, ex: Exchange) -> None:
        started = time.monotonic()
        path = ex.target.split("?", 1)[0]
        record: dict[str, Any] = {"method": ex.method, "path": path}
        try:
            await self._answer(ex, path, record)
        except asyncio.CancelledError:  # the step ended (`close`) before it was through
            self.meter.cut_off += 1
            if record.get("error") == UNREADABLE:  # (its count ended with the cut: the
                self.meter.unmetered -= 1  # answer was cut off, not one without usage)
            if record.get("error") is None or record["error"] == UNREADABLE:
                record["error"] = CUT_OFF
            raise
        finally:
            record["ms"] = int((time.monotonic() - started) * 1000)
            self.log.add(record)

    async def _answer(self, ex: Exchange, path: str, record: dict[str, Any]) -> None:
        metered = ex.method == "POST" and path == MESSAGES
        self.meter.requests += 1
        model, refusal = None, None
        if ex.body:  # every body forwarded is read (a message request's is checked too)
            allow = self._settings.allow_server_tools
            if len(ex.body) > PARSE_ON_LOOP:
                model, refusal = await asyncio.to_thread(_inspect, ex.body, allow, metered)
            else:
                model, refusal = _inspect(ex.body, allow, metered)
            if metered:
                record["model"] = model
        if refusal is not None:
            await self._refuse(ex, record, 400, "invalid_request_error", refusal)
            return
        # metered requests go `max_in_flight` at a time, each checked against the budget
        # as its turn comes: requests in flight together overshoot it by a bounded amount
        turn: contextlib.AbstractAsyncContextManager[Any] = (
            self._in_flight if metered else contextlib.nullcontext()
        )
        async with turn:
            await self._answer_in_turn(ex, metered, model, record)

    async def _answer_in_turn(
        self, ex: Exchange, metered: bool, model: str | None, record: dict[str, Any]
    ) -> None:
        reason = self.meter.over_budget()
        if reason is not None:
            message = f"this step's model API budget is used up ({reason})"
            self.meter.refused += 1
            record["status"] = 402
            if self.stop_message is None:
                self.stop_message = (
                    f"model API budget exceeded: {reason}; the gateway refused the next "
                    "request and the step was stopped"
                )
                self._tell(f"model API: {reason}: request refused, stopping the step")
            await ex.respond(402, api_error("billing_error", message))
            self.exceeded.set()
            return
        if (
            metered
            and self.meter.budget.max_usd is not None
            and (model is None or self.meter.price(model) is None)
        ):
            await self._refuse(ex, record, 400, "invalid_request_error",
                               f"no price is known for model {model!r} and this step's budget is in USD; "
                               "add it under prices")  # fmt: skip
            return
        await self._forward(ex, metered, record)

    async def _forward(self, ex: Exchange, metered: bool, record: dict[str, Any]) -> None:
        assert self._client is not None
        headers = [(k, v) for k, v in ex.headers if k not in DROP_REQUEST]
        headers += [("x-api-key", self._key), ("accept-encoding", "identity")]
        request = self._client.build_request(
            ex.method, self._upstream + ex.target, headers=headers, content=ex.body
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx2.TimeoutException:
            self.meter.server_errors += 1
            await self._refuse(
                ex,
                record,
                504,
                "timeout_error",
                "the model API endpoint did not answer in time",
                count=False,
            )
            return
        except httpx2.HTTPError as exc:
            self.meter.server_errors += 1
            detail = self._redactor.text(f"{type(exc).__name__}: {exc}")
            await self._refuse(
                ex,
                record,
                502,
                "api_error",
                f"the model API endpoint cannot be reached: {detail}",
                count=False,
            )
            return
        status = response.status_code
        record["status"] = status
        if status == 429:
            self.meter.rate_limited += 1
        elif status >= 500:
            self.meter.server_errors += 1
        metered = metered and status == 200
        events = "text/event-stream" in response.headers.get("content-type", "")
        # the endpoint's headers, with the key (and anything key-shaped) redacted in every
        # value, and a header whose very name holds it dropped
        head = [
            (k, self._redactor.text(v))
            for k, v in response.headers.multi_items()
            if k.lower() not in DROP_RESPONSE and self._redactor.text(k) == k
        ]
        counted = self.meter.response() if metered else None
        reader = EventUsage() if counted is not None and events else None
        # A metered JSON answer is read whole, counted, then sent: its usage is in the
        # step's total before the client can have read it. A stream is counted as it goes.
        whole = counted is not None and not events
        body = bytearray()
        scrub = StreamScrubber(self._key.encode())
        to_client = True
        try:
            if not whole:
                to_client = await _try(ex.start(status, head))
            try:
                async for chunk in response.aiter_bytes():
                    if whole:
                        body += chunk
                        if len(body) > MAX_METERED_BODY:  # too big to read: pass it on
                            whole = False
                            to_client = await _try(ex.start(status, head))
                            chunk, body = bytes(body), bytearray()
                        else:
                            continue
                    if reader is not None and counted is not None:
                        reader.feed(chunk)
                        if reader.usage is not None:
                            counted.update(reader.model or record.get("model"), reader.usage)
                    if to_client:  # a client that hung up: still read on, to count it all
                        to_client = await _try(ex.send(scrub.feed(chunk)))
            except httpx2.HTTPError as exc:
                record["error"] = self._redactor.text(f"{type(exc).__name__}: {exc}")
                self.meter.server_errors += 1
                if not ex.started:  # nothing sent yet: say so, API-style
                    message = "the model API endpoint broke off its answer"
                    await ex.respond(502, api_error("api_error", message))
                    return
                raise ClientGone("the endpoint broke off the response") from None
            if whole and counted is not None:
                model, raw = json_usage(bytes(body))
                if raw is not None:
                    counted.update(model or record.get("model"), raw)
                to_client = await _try(ex.start(status, head)) and await _try(
                    ex.send(scrub.feed(bytes(body)))
                )
            if to_client:
                await ex.send(scrub.flush())
                await ex.end()
        except asyncio.CancelledError:  # the step ended: an answer read whole still counts
            if whole and counted is not None and body:
                model, raw = json_usage(bytes(body))
                if raw is not None:
                    counted.update(model or record.get("model"), raw)
            raise
        finally:
            await response.aclose()
            if reader is not None and counted is not None:
                reader.close()
                if reader.usage is not None:
                    counted.update(reader.model or record.get("model"), reader.usage)
            if counted is not None:
                self._counted(record, counted)

    def _counted(self, record: dict[str, Any], counted: Counted) -> None:
        used = counted.used
        if used.turns == 0:
            self.meter.unmetered += 1
            record["error"] = UNREADABLE
            self._tell(f"model API: {record['path']} answered 200 without readable usage")
            return
        record["model"] = counted.model
        record["usage"] = {k: getattr(used, k) for k in COUNTS}
        if counted.problem is not None:  # counted what it could; the rest counts 0
            self.meter.unmetered += 1
            record["error"] = clip(f"usage not all readable: {counted.problem}")
            self._tell(
                f"model API: {record['path']} answered 200 with usage that is no count,"
                f" counted as 0: {clip(counted.problem)}"
            )
        total = self.meter.usage
        self._tell(
            f"model API: {counted.model} in={used.input_tokens} out={used.output_tokens} "
            f"cache_write={used.cache_creation_input_tokens} "
            f"cache_read={used.cache_read_input_tokens} "
            f"(step: {total.total_tokens} tokens, ${total.cost_usd:.4f})"
        )

    async def _refuse(
        self,
        ex: Exchange,
        record: dict[str, Any],
        status: int,
        kind: str,
        message: str,
        *,
        count: bool = True,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        if count:
            self.meter.refused += 1
        record["status"] = status
        record["error"] = message
        await ex.respond(status, api_error(kind, message), headers or ())

    def _token_ok(self, ex: Exchange) -> bool:
        given = ex.header("x-api-key")
        if given is None:
            auth = ex.header("authorization") or ""
            given = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def _tell(self, text: str) -> None:
        text = self._redactor.text(text)
        log.info("%s", text)
        if self._say is not None:
            self._say(text)


async def _try(sending: Awaitable[None]) -> bool:
    """Await a send to the client; False if the client is gone."""
    try:
        await sending
    except ClientGone:
        return False
    return True


def not_ascii_header(headers: list[tuple[str, str]]) -> str | None:
    """The name of the first request header whose name or value is not ASCII, or None:
    the upstream client refuses to send one (it raised UnicodeEncodeError from outside
    every handler, a 2 KB traceback in the engine's log for each such request a step
    sent: 10 MB in 10 s); RFC 9110 section 5.5 leaves other bytes to the recipient."""
    for name, value in headers:
        if not (name.isascii() and value.isascii()):
            return name
    return None


def _inspect(
    body: bytes, allow_server_tools: bool, message: bool = True
) -> tuple[str | None, str | None]:
    """(the model a message request names, why it is refused or None). A body holding a
    key twice, at any depth, is refused: the gateway would check one value (Python keeps
    the last) and the API might act on the other (`"model"` given twice passed the
    price check with the cheap one). Only a message request's (`message`) is checked
    further. A body the gateway cannot read as JSON (not JSON, not UTF-8, or nested past
    Python's recursion limit) is refused too: forwarded unread, it passed every check
    above (a server tool and a key given twice beside a deep enough value). So is one
    with a byte-order mark, or in UTF-16 or UTF-32 (`jsonwire.wire_text`): `json.loads`
    reads those, the endpoint may not (RFC 8259 section 8.1: JSON between systems is
    UTF-8 without a BOM)."""
    try:
        data = loads_unique(wire_text(body))
    except NotUtf8Json as exc:
        return None, f"malformed request body: {exc}"
    except DuplicateKey as exc:
        return None, f"malformed request body: {exc.line}; give each key once"
    except RecursionError:
        return None, "malformed request body: JSON nested too deeply for the gateway to check"
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"malformed request body: not JSON ({clip(str(exc), 120)})"
    if not isinstance(data, dict) or not message:
        return None, None
    model = data.get("model") if isinstance(data.get("model"), str) else None
    if allow_server_tools:
        return model, None
    allow = "set allow_server_tools = true under [gateway] in the host's config.toml to allow it"
    if data.get("mcp_servers"):
        return model, (
            "mcp_servers are not allowed: the API would connect to them on this step's behalf, "
            f"outside its sandbox; {allow}"
        )
    tools = data.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and SERVER_TOOL.match(kind):
            return model, (
                f"server tool {clip(kind, 60)!r} is not allowed: the API would run it on this "
                f"step's behalf, outside its sandbox and unpriced; {allow}"
            )
    return model, None


def _listen(ports: tuple[int, int]) -> socket.socket:
    """A listening socket on 127.0.0.1, on a free port of the range (tried from a random
    place, so engines on one host rarely race for the same port)."""
    first, last = ports
    count = last - first + 1
    offset = random.randrange(count)
    for i in range(count):
        port = first + (offset + i) % count
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(64)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise AgentError(
                f"the model API gateway cannot listen on 127.0.0.1:{port}: {exc.strerror}"
            ) from exc
        return sock
    raise AgentError(
        f"the model API gateway found no free port in {first}-{last} ([gateway] ports in config.toml)"
    )
