"""The gateway against a VM that misbehaves: real sockets (raw HTTP where a client would
not send it) against a real gateway and the local Messages API server. What is checked:
a request without the token is refused from its head, its body unread; connections and
requests in flight are capped; the request log stays small; the key never leaves in a
header; server tools, dot segments and malformed requests are refused with an answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anthropic
import httpx2
import pytest
from tests.support.messages_server import MessagesServer, Recorded, Reply, text, usage

from swarm_engine.agents.base import ModelApiNeeds
from swarm_engine.agents.claude.settings import HostConfig
from swarm_engine.gateway.proxy import StepGateway
from swarm_engine.gateway.settings import GatewaySettings
from swarm_engine.gateway.step import open_step_gateway

KEY = "sk-ant-api03-gateway-KEY-0000SECRET9999"
MODEL = "claude-sonnet-4-6"
HANG = 30.0
"""Only a bound for a gateway that never answers (the failure these tests catch)."""


@pytest.fixture
def server() -> Iterator[MessagesServer]:
    with MessagesServer(api_key=KEY) as srv:
        yield srv


async def gateway(
    server: MessagesServer,
    tmp_path: Path,
    needs: ModelApiNeeds | None = None,
    settings: GatewaySettings | None = None,
) -> AsyncIterator[StepGateway]:
    async with open_step_gateway(
        settings=settings or GatewaySettings(),
        host=HostConfig(),
        environ={"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url},
        needs=needs or ModelApiNeeds(),
        artifacts_dir=tmp_path,
    ) as gw:
        yield gw


class Raw:
    """One connection to the gateway, speaking HTTP/1.1 by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, gw: StepGateway) -> Raw:
        return cls(*await asyncio.open_connection("127.0.0.1", gw.port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        """One response: status, headers, body (by its content-length, or chunked)."""
        async with asyncio.timeout(HANG):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(
                (k.strip().lower(), v.strip())
                for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)
            )
            if headers.get("transfer-encoding") == "chunked":
                body = b""
                while size := int((await self.reader.readuntil(b"\r\n"))[:-2], 16):
                    body += (await self.reader.readexactly(size + 2))[:-2]
                await self.reader.readuntil(b"\r\n")  # the end: no trailers
            else:
                body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split()[1]), headers, body

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def head(method: str, target: str, token: str | None, *extra: str) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "host: gateway", *extra]
    if token is not None:
        lines.append(f"x-api-key: {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_request_without_the_token_is_refused_before_its_body_is_read(
    server: MessagesServer, tmp_path: Path
) -> None:
    async for gw in gateway(server, tmp_path):
        raw = await Raw.open(gw)
        # announces 20 MB and sends none of it: the answer comes from the head alone
        await raw.send(head("POST", "/v1/messages", None, "content-length: 20000000"))
        status, headers, body = await raw.answer()
        assert status == 401 and headers["connection"] == "close"
        assert json.loads(body)["error"]["type"] == "authentication_error"
        async with asyncio.timeout(HANG):
            assert await raw.reader.read() == b""  # and the connection is closed
        await raw.close()
    assert server.requests == []


async def test_connections_past_the_cap_are_refused(server: MessagesServer, tmp_path: Path) -> None:
    settings = GatewaySettings(max_connections=4)
    async for gw in gateway(server, tmp_path, settings=settings):
        held = [await Raw.open(gw) for _ in range(4)]
        for raw in held:  # each one served, so each one is open on the gateway's side
            await raw.send(head("GET", "/v1/models", gw.token))
            assert (await raw.answer())[0] == 200
        extra = await Raw.open(gw)
        await extra.send(head("GET", "/v1/models", gw.token))
        status, _, body = await extra.answer()
        assert status == 503 and "max_connections" in json.loads(body)["error"]["message"]
        for raw in (*held, extra):
            await raw.close()
        busy = gw.meter.busy
    assert busy == 1 and len(server.requests) == 4


async def open_at_most(gw: StepGateway, count: int) -> None:
    """Wait for the connections the gateway is closing (in neither of its pools) to end,
    then check that it holds at most `count`."""
    closing = gw._connections - set(gw._pending) - gw._authorized
    if closing:
        await asyncio.wait(closing, timeout=HANG)
    assert len(gw._connections) <= count


async def test_idle_connections_without_the_token_do_not_lock_the_step_out(
    server: MessagesServer, tmp_path: Path
) -> None:
    pending = GatewaySettings().max_pending
    async for gw in gateway(server, tmp_path):
        # any local process can open them, more than either limit
        idle = [await Raw.open(gw) for _ in range(pending + 20)]
        mine = await Raw.open(gw)
        await mine.send(head("GET", "/v1/models", gw.token))
        assert (await mine.answer())[0] == 200
        # the oldest idle ones were closed to make room; the rest wait for their heads
        for raw in idle[:21]:
            async with asyncio.timeout(HANG):
                assert await raw.reader.read() == b""
        await open_at_most(gw, pending + 1)
        for raw in (*idle, mine):
            await raw.close()
        evicted = gw.meter.evicted
    assert evicted == 21 and len(server.requests) == 1


async def test_connections_are_bounded_in_total(server: MessagesServer, tmp_path: Path) -> None:
    settings = GatewaySettings(max_connections=2, max_pending=3)
    async for gw in gateway(server, tmp_path, settings=settings):
        held = [await Raw.open(gw) for _ in range(2)]
        for raw in held:
            await raw.send(head("GET", "/v1/models", gw.token))
            assert (await raw.answer())[0] == 200
        idle = [await Raw.open(gw) for _ in range(10)]
        for raw in idle[:7]:
            async with asyncio.timeout(HANG):
                assert await raw.reader.read() == b""
        await open_at_most(gw, 2 + 3)
        # one more with the token: past max_connections, refused; the held ones still work
        extra = await Raw.open(gw)
        await extra.send(head("GET", "/v1/models", gw.token))
        assert (await extra.answer())[0] == 503
        for raw in held:
            await raw.send(head("GET", "/v1/models", gw.token))
            assert (await raw.answer())[0] == 200
        assert len(gw._connections) <= 2 + 3
        for raw in (*held, *idle, extra):
            await raw.close()
    assert len(server.requests) == 4


@pytest.mark.parametrize("sent", [b"", b"GET /v1/models HTTP/1.1\r\nhost: gat"])
async def test_a_head_that_does_not_arrive_in_time_is_closed(
    server: MessagesServer, tmp_path: Path, sent: bytes
) -> None:
    settings = GatewaySettings(head_timeout=0.3)
    async for gw in gateway(server, tmp_path, settings=settings):
        raw = await Raw.open(gw)
        await raw.send(sent)
        async with asyncio.timeout(HANG):
            assert await raw.reader.read() == b""
        if gw._connections:  # its end on the gateway's side
            await asyncio.wait(set(gw._connections), timeout=HANG)
        assert not gw._connections
        await raw.close()
    assert server.requests == []


async def test_a_kept_alive_connection_is_closed_when_idle(
    server: MessagesServer, tmp_path: Path
) -> None:
    settings = GatewaySettings(idle_timeout=0.3)
    async for gw in gateway(server, tmp_path, settings=settings):
        raw = await Raw.open(gw)
        for _ in range(2):  # kept alive between requests that follow each other
            await raw.send(head("GET", "/v1/models", gw.token))
            assert (await raw.answer())[0] == 200
        async with asyncio.timeout(HANG):
            assert await raw.reader.read() == b""
        await raw.close()
    assert len(server.requests) == 2


async def test_the_request_log_stays_small_and_tokenless_requests_are_only_counted(
    server: MessagesServer, tmp_path: Path
) -> None:
    long_path = "/v1/" + "x" * 60_000
    async for gw in gateway(server, tmp_path):
        for token in [gw.token] * 30 + [None] * 30:
            raw = await Raw.open(gw)
            await raw.send(head("GET", long_path, token))
            assert (await raw.answer())[0] == (404 if token else 401)
            await raw.close()
    record_file = tmp_path / "model_api.json"
    assert record_file.stat().st_size < 64 * 1024
    record = json.loads(record_file.read_text())
    assert record["unauthorized"] == 30 and record["refused"] == 30
    logged = record["requests_log"]
    assert len(logged) == 30 and all(r["status"] == 404 for r in logged)
    assert all(len(r["path"]) < 300 and len(r["error"]) < 300 for r in logged)


async def test_a_key_in_a_response_header_is_redacted(
    server: MessagesServer, tmp_path: Path
) -> None:
    other = "sk-ant-api03-some-other-key-0123456789"

    def echo(req: Recorded) -> Reply:
        headers = {"x-echo-key": f"key={req.api_key}", "x-other": other, f"x-{KEY}": "1"}
        return Reply(body=text("hi", used=usage(1, 1)), headers=headers)

    server.push(echo)
    async for gw in gateway(server, tmp_path):
        async with httpx2.AsyncClient() as http:
            base, token = gw.vm_env("127.0.0.1").values()
            answer = await http.post(
                f"{base}/v1/messages",
                headers={"x-api-key": token},
                json={"model": MODEL, "max_tokens": 5, "messages": []},
            )
    assert answer.status_code == 200
    assert answer.headers["x-echo-key"] == "key=[REDACTED]"
    assert answer.headers["x-other"] == "[REDACTED]"
    assert f"x-{KEY}" not in answer.headers  # a name that holds it: dropped
    everything = "\n".join(f"{k}: {v}" for k, v in answer.headers.multi_items())
    assert KEY not in everything and other not in everything


async def test_requests_in_flight_together_overshoot_the_budget_by_a_bounded_amount(
    server: MessagesServer, tmp_path: Path
) -> None:
    server.fallback = Reply(body=text("slow", used=usage(60, 40)), delay=0.2)
    settings = GatewaySettings(max_connections=64)  # the cap under test is max_in_flight
    async for gw in gateway(server, tmp_path, ModelApiNeeds(max_tokens=400), settings):
        env = gw.vm_env("127.0.0.1")
        async with anthropic.AsyncAnthropic(
            api_key=env["ANTHROPIC_API_KEY"], base_url=env["ANTHROPIC_BASE_URL"], max_retries=0
        ) as sdk:
            results = await asyncio.gather(
                *(
                    sdk.messages.create(
                        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
                    )
                    for _ in range(30)
                ),
                return_exceptions=True,
            )
    answered = len(server.message_requests())
    # each answer is 100 tokens; a request starts only under 400, at most 4 at a time
    assert answered <= 7 and gw.usage().total_tokens == 100 * answered
    refused = [r for r in results if isinstance(r, anthropic.APIStatusError)]
    assert len(refused) == 30 - answered and {r.status_code for r in refused} == {402}
    # the step is over its budget however it got there: stopped for it
    assert gw.exceeded.is_set() and "model API budget exceeded" in str(gw.stop_message)


async def test_a_step_that_ends_over_its_budget_without_a_refusal_is_stopped_for_it(
    server: MessagesServer, tmp_path: Path
) -> None:
    server.push(text("big", used=usage(300, 200)))
    async for gw in gateway(server, tmp_path, ModelApiNeeds(max_tokens=400)):
        async with anthropic.AsyncAnthropic(**_sdk_args(gw)) as sdk:
            await sdk.messages.create(
                model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert not gw.exceeded.is_set()
    assert gw.exceeded.is_set()
    assert gw.stop_message == (
        "model API budget exceeded: token budget exceeded: 500 of 400 tokens used; "
        "its answers went over it, no request was refused"
    )


def _sdk_args(gw: StepGateway) -> dict[str, object]:
    env = gw.vm_env("127.0.0.1")
    return {
        "api_key": env["ANTHROPIC_API_KEY"],
        "base_url": env["ANTHROPIC_BASE_URL"],
        "max_retries": 0,
    }


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        ({"mcp_servers": [{"type": "url", "url": "http://10.0.0.1/", "name": "x"}]}, "mcp_servers"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "web_search_20250305"),
        ({"tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}]}, "web_fetch_20250910"),
        ({"tools": [{"type": "code_execution_20250825", "name": "x"}]}, "code_execution_20250825"),
    ],
)
async def test_server_tools_are_refused_unless_the_host_allows_them(
    server: MessagesServer, tmp_path: Path, extra: dict[str, object], refused: str
) -> None:
    server.push(text("allowed", used=usage(1, 1)))
    async for gw in gateway(server, tmp_path):
        async with anthropic.AsyncAnthropic(**_sdk_args(gw)) as sdk:
            with pytest.raises(
                anthropic.BadRequestError,
                match=f"{refused}.* is not allowed|{refused} are not allowed",
            ):
                await sdk.messages.create(
                    model=MODEL,
                    max_tokens=5,
                    messages=[{"role": "user", "content": "x"}],
                    extra_body=extra,
                )
    assert server.message_requests() == []
    allowed = GatewaySettings(allow_server_tools=True)
    async for gw in gateway(server, tmp_path, settings=allowed):
        async with anthropic.AsyncAnthropic(**_sdk_args(gw)) as sdk:
            await sdk.messages.create(
                model=MODEL,
                max_tokens=5,
                messages=[{"role": "user", "content": "x"}],
                extra_body=extra,
            )
    assert len(server.message_requests()) == 1


@pytest.mark.parametrize(
    "target",
    [
        "/v1/models/..",
        "/v1/models/.",
        "/v1/models/%2e%2e",
        "/v1/models/%2E",
        "/v1/models/../models",
    ],
)
async def test_dot_segments_are_refused(
    server: MessagesServer, tmp_path: Path, target: str
) -> None:
    async for gw in gateway(server, tmp_path):
        raw = await Raw.open(gw)
        await raw.send(head("GET", target, gw.token))
        status, _, body = await raw.answer()
        await raw.close()
    assert status == 400 and "dot segments" in json.loads(body)["error"]["message"]
    assert server.requests == []


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        (("content-length: 2", "content-length: 3"), 400),
        (("x-big: " + "a" * 70_000,), 431),
    ],
)
async def test_malformed_requests_are_answered(
    server: MessagesServer, tmp_path: Path, extra: tuple[str, ...], status: int
) -> None:
    async for gw in gateway(server, tmp_path):
        raw = await Raw.open(gw)
        await raw.send(head("POST", "/v1/messages", gw.token, *extra))
        answered, _, body = await raw.answer()
        async with asyncio.timeout(HANG):
            assert await raw.reader.read() == b""  # and the connection is closed
        await raw.close()
    assert answered == status
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert server.requests == []
