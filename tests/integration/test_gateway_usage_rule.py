"""The gateway reads usage by the `claude` kind's rule (agents/claude/usage.py) and refuses
request bodies holding a key twice, or that are not UTF-8 JSON without a byte-order mark.
Real listener, real SDK, the local Messages API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.integration.test_gateway import KEY, MODEL, client, gateway
from tests.support.messages_server import MessagesServer, text, usage

from swarm_engine.agents.base import ModelApiNeeds


@pytest.fixture
def server() -> Iterator[MessagesServer]:
    with MessagesServer(api_key=KEY) as srv:
        yield srv


@pytest.mark.parametrize(
    "value",
    [10**30, 2**63, 2**40 + 1, 100.0, True, -5, "5"],
    ids=["10^30", "2^63", "past-2^40", "float", "bool", "negative", "string"],
)
async def test_usage_that_is_no_count_counts_0_and_flags_the_answer(
    server: MessagesServer, tmp_path: Path, value: Any
) -> None:
    bad = text("odd usage", used=usage(10, 20, 30, 40))
    bad["usage"]["output_tokens"] = value
    server.push(bad)
    async for gw in gateway(server, tmp_path):
        async with client(gw) as sdk:
            # the answer is passed on as the endpoint gave it (the client judges it)
            await sdk.messages.with_raw_response.create(
                model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        used, meter = gw.usage(), gw.meter
    assert (used.input_tokens, used.output_tokens) == (10, 0)
    assert (used.cache_creation_input_tokens, used.cache_read_input_tokens) == (30, 40)
    assert used.turns == 1 and meter.unmetered == 1
    doc = json.loads((tmp_path / "model_api.json").read_text())
    (entry,) = doc["requests_log"]
    assert entry["error"].startswith("usage not all readable: output_tokens is "), entry
    assert "not a count" in entry["error"]
    assert entry["usage"]["output_tokens"] == 0


async def post_raw(
    server: MessagesServer, tmp_path: Path, path: str, body: str | bytes
) -> tuple[httpx2.Response, int]:
    """`body` as a step's request to its gateway at `path`: the answer, and how many
    requests the gateway refused."""
    server.fallback = text("never asked")
    async for gw in gateway(server, tmp_path, ModelApiNeeds(max_usd=1.0)):
        base, token = gw.vm_env("127.0.0.1").values()
        async with httpx2.AsyncClient() as http:
            answer = await http.post(
                f"{base}{path}",
                headers={"x-api-key": token, "content-type": "application/json"},
                content=body.encode() if isinstance(body, str) else body,
            )
        refused = gw.meter.refused
    return answer, refused


BODIES = {
    "model twice": '{"model": "cheap", "max_tokens": 5, "messages": [],'
    ' "model": "claude-sonnet-4-6"}',
    "tools twice": '{"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [],'
    ' "tools": [{"type": "web_search_20250305", "name": "web_search"}], "tools": []}',
    "deep": '{"model": "claude-sonnet-4-6", "max_tokens": 5,'
    ' "messages": [{"role": "user", "content": [{"type": "text", "text": "a", "text": "b"}]}]}',
}


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize("body", list(BODIES.values()), ids=list(BODIES))
async def test_a_request_body_holding_a_key_twice_is_refused(
    server: MessagesServer, tmp_path: Path, body: str, path: str
) -> None:
    answer, refused = await post_raw(server, tmp_path, path, body)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert "malformed request body: duplicate key" in error["error"]["message"]
    assert refused == 1
    assert server.requests == []  # never forwarded


NESTED = "[" * 5000 + "]" * 5000
UNREADABLE = {
    "server tool past a deep value": '{"model": "claude-sonnet-4-6", "max_tokens": 5,'
    ' "messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}],'
    f' "x": {NESTED}}}',
    "model twice past a deep value": '{"model": "cheap", "model": "claude-sonnet-4-6",'
    f' "max_tokens": 5, "messages": [], "x": {NESTED}}}',
    "not JSON": '{"model": "claude-sonnet-4-6", "tools": [{"type": "web_search_2025',
}


@pytest.mark.parametrize("body", list(UNREADABLE.values()), ids=list(UNREADABLE))
async def test_a_request_body_the_gateway_cannot_read_is_refused(
    server: MessagesServer, tmp_path: Path, body: str
) -> None:
    """A body nested past Python's recursion limit (or not JSON) is refused, not forwarded
    unchecked (tester h-210: a server tool or a key given twice beside 5,000 levels of
    `[` went through to the endpoint)."""
    answer, refused = await post_raw(server, tmp_path, "/v1/messages", body)
    assert answer.status_code == 400, answer.text
    assert "malformed request body: " in answer.json()["error"]["message"]
    assert refused == 1
    assert server.requests == []  # never forwarded


WIRE = '{"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": []}'
NOT_UTF8 = {
    "utf-8 BOM": (b"\xef\xbb\xbf" + WIRE.encode(), "it is UTF-8 with a byte-order mark"),
    "utf-16": (WIRE.encode("utf-16"), "it is UTF-16 (it starts with a byte-order mark)"),
    "utf-16-be BOM": (b"\xfe\xff" + WIRE.encode("utf-16-be"), "it is UTF-16"),
    "utf-32": (WIRE.encode("utf-32"), "it is UTF-32 (it starts with a byte-order mark)"),
    "utf-16-le": (WIRE.encode("utf-16-le"), "not JSON"),  # (ASCII text: NULs between)
    "latin-1": (WIRE.replace("[]", '[{"role": "user", "content": "caf\u00e9"}]').encode("latin-1"),
                "it is not UTF-8 (byte 93: invalid continuation byte)"),
}  # fmt: skip


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize(("body", "said"), list(NOT_UTF8.values()), ids=list(NOT_UTF8))
async def test_a_request_body_that_is_not_utf8_without_a_bom_is_refused(
    server: MessagesServer, tmp_path: Path, body: bytes, said: str, path: str
) -> None:
    """`json.loads` on bytes skips a UTF-8 byte-order mark and reads UTF-16 and UTF-32:
    such bodies were forwarded, though JSON between systems MUST be UTF-8 without a BOM
    (RFC 8259 section 8.1). Now a 400 in the API's shape, one line, never forwarded."""
    answer, refused = await post_raw(server, tmp_path, path, body)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    message = error["error"]["message"]
    assert message.startswith("swarm-engine gateway: malformed request body: ") and said in message
    assert "\n" not in message
    assert message.count("byte-order mark") <= 1, message  # (it said so twice for UTF-8's)
    assert refused == 1
    assert server.requests == []  # never forwarded


@pytest.mark.parametrize("value", [b"caf\xe9", b"\xe2\x80\xa8x"], ids=["latin-1", "utf-8"])
async def test_a_request_header_that_is_not_ascii_is_refused_in_one_line(
    server: MessagesServer, tmp_path: Path, value: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A header whose value is not ASCII made the upstream client raise outside every
    handler: no answer, and a 2 KB traceback in the engine's log per request (a step
    looping on it wrote 10 MB in 10 s). Now a 400 in the API's shape, never forwarded."""
    server.fallback = text("never asked")
    async for gw in gateway(server, tmp_path, ModelApiNeeds(max_usd=1.0)):
        base, token = gw.vm_env("127.0.0.1").values()
        async with httpx2.AsyncClient() as http:
            answer = await http.post(
                f"{base}/v1/messages",
                headers={
                    "x-api-key": token,
                    "content-type": "application/json",
                    "anthropic-beta": value,
                },
                content=json.dumps({"model": MODEL, "max_tokens": 5, "messages": []}).encode(),
            )
        refused = gw.meter.refused
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]["message"]
    assert message == (
        "swarm-engine gateway: request header 'anthropic-beta' holds bytes that are not ASCII;"
        " it is not forwarded"
    )
    assert refused == 1 and server.requests == []
    assert "Traceback" not in caplog.text and "Unhandled exception" not in caplog.text
