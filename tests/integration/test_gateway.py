"""The model API gateway on its own: a real listener, the real `anthropic` SDK as its
client (here on the host; in a VM in test_model_api_sandbox.py) and the local Messages API
server as the endpoint. Usage is checked against the server's own sums."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anthropic
import httpx2
import pytest
from tests.support.messages_server import (
    MessagesServer,
    Recorded,
    Reply,
    api_error,
    message,
    text,
    usage,
)

from swarm_engine.agents.base import ModelApiNeeds
from swarm_engine.agents.claude.settings import HostConfig, Price
from swarm_engine.gateway.proxy import StepGateway
from swarm_engine.gateway.settings import GatewaySettings
from swarm_engine.gateway.step import open_step_gateway

KEY = "sk-ant-api03-gateway-KEY-0000SECRET9999"
MODEL = "claude-sonnet-4-6"


@pytest.fixture
def server() -> Iterator[MessagesServer]:
    with MessagesServer(api_key=KEY) as srv:
        yield srv


async def gateway(
    server: MessagesServer, tmp_path: Path, needs: ModelApiNeeds | None = None
) -> AsyncIterator[StepGateway]:
    async with open_step_gateway(
        settings=GatewaySettings(),
        host=HostConfig(),
        environ={"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url},
        needs=needs or ModelApiNeeds(),
        artifacts_dir=tmp_path,
    ) as gw:
        yield gw


def client(gw: StepGateway, token: str | None = None) -> anthropic.AsyncAnthropic:
    env = gw.vm_env("127.0.0.1")
    return anthropic.AsyncAnthropic(
        api_key=token or env["ANTHROPIC_API_KEY"], base_url=env["ANTHROPIC_BASE_URL"], max_retries=0
    )


async def test_json_and_streamed_answers_are_metered_and_the_key_is_injected(
    server: MessagesServer, tmp_path: Path
) -> None:
    server.push(
        text("one", used=usage(100, 20, 30, 40)),
        text("two, streamed", used=usage(7, 11, 0, 500)),
    )
    async for gw in gateway(server, tmp_path):
        sdk = client(gw)
        first = await sdk.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        assert first.content[0].text == "one"  # type: ignore[union-attr]
        async with sdk.messages.stream(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            assert await stream.get_final_text() == "two, streamed"
        counted = await sdk.messages.count_tokens(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        assert counted.input_tokens == 42
        await sdk.close()
        used = gw.usage()
        assert gw.token not in {r.api_key for r in server.requests}
    # the endpoint saw the host's key on every request, never the token
    assert {r.api_key for r in server.requests} == {KEY}
    totals = server.reported_usage()
    assert used.input_tokens == totals["input_tokens"] == 107
    assert used.output_tokens == totals["output_tokens"] == 31
    assert used.cache_creation_input_tokens == totals["cache_creation_input_tokens"] == 30
    assert used.cache_read_input_tokens == totals["cache_read_input_tokens"] == 540
    assert used.turns == 2  # count_tokens is free: not a turn, no usage
    assert used.cost_usd == pytest.approx((107 * 3 + 31 * 15 + 30 * 3.75 + 540 * 0.3) / 1e6)
    record = json.loads((tmp_path / "model_api.json").read_text())
    assert record["requests"] == 3 and record["usage"]["input_tokens"] == 107
    assert KEY not in (tmp_path / "model_api.json").read_text()


async def test_a_wrong_or_missing_token_is_refused_and_a_closed_gateway_is_gone(
    server: MessagesServer, tmp_path: Path
) -> None:
    async for gw in gateway(server, tmp_path):
        for token in ("sk-swarm-not-this-one", KEY):  # the key itself is no token either
            async with client(gw, token) as sdk:
                with pytest.raises(anthropic.AuthenticationError, match="its own step"):
                    await sdk.messages.create(
                        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
                    )
        base, token = gw.vm_env("127.0.0.1").values()
    assert server.requests == []  # nothing reached the endpoint
    async with httpx2.AsyncClient() as http:
        with pytest.raises(httpx2.ConnectError):  # the step's port is closed with it
            await http.post(f"{base}/v1/messages", headers={"x-api-key": token}, json={})


async def test_the_budget_refuses_the_next_request_with_a_billing_error(
    server: MessagesServer, tmp_path: Path
) -> None:
    server.push(text("a", used=usage(60, 40)), text("b", used=usage(60, 40)))
    async for gw in gateway(server, tmp_path, ModelApiNeeds(max_tokens=150)):
        sdk = client(gw)
        for _ in range(2):  # 100 then 200 tokens: the second crosses the budget
            await sdk.messages.create(
                model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert not gw.exceeded.is_set()
        with pytest.raises(anthropic.APIStatusError) as refused:
            await sdk.messages.create(
                model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert refused.value.status_code == 402
        assert "token budget exceeded: 200 of 150 tokens used" in str(refused.value)
        assert gw.exceeded.is_set() and "model API budget exceeded" in str(gw.stop_message)
        await sdk.close()
    assert len(server.message_requests()) == 2  # the refused one never left the host


async def test_a_usd_budget_needs_a_price_for_the_model(
    server: MessagesServer, tmp_path: Path
) -> None:
    needs = ModelApiNeeds(max_usd=1.0, prices={"my-model": Price(input=1, output=2)})
    server.push(
        message([{"type": "text", "text": "priced"}], used=usage(1000, 1000), model="my-model")
    )
    async for gw in gateway(server, tmp_path, needs):
        sdk = client(gw)
        with pytest.raises(
            anthropic.BadRequestError, match="no price is known for model 'mystery'"
        ):
            await sdk.messages.create(
                model="mystery", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        await sdk.messages.create(
            model="my-model", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
        assert gw.usage().cost_usd == pytest.approx((1000 * 1 + 1000 * 2) / 1e6)
        await sdk.close()


async def test_errors_are_counted_passed_through_and_other_paths_never_leave_the_host(
    server: MessagesServer, tmp_path: Path
) -> None:
    server.push(
        api_error(429, "rate_limit_error", "slow down", {"retry-after": "0"}),
        api_error(529, "overloaded_error"),
        api_error(500, "api_error"),
    )
    async for gw in gateway(server, tmp_path):
        sdk = client(gw)
        with pytest.raises(anthropic.RateLimitError, match="slow down"):
            await sdk.messages.create(
                model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        for _ in range(2):
            with pytest.raises(anthropic.InternalServerError):
                await sdk.messages.create(
                    model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
                )
        async with httpx2.AsyncClient() as http:
            base, token = gw.vm_env("127.0.0.1").values()
            batches = await http.post(
                f"{base}/v1/messages/batches", headers={"x-api-key": token}, json={}
            )
            files = await http.get(f"{base}/v1/files", headers={"x-api-key": token})
        await sdk.close()
        meter = gw.meter
    assert batches.status_code == files.status_code == 404
    assert batches.json()["error"]["type"] == "not_found_error"
    assert meter.rate_limited == 1 and meter.server_errors == 2 and meter.refused == 2
    assert gw.usage().turns == 0 and gw.usage().total_tokens == 0
    assert [r.path for r in server.requests] == ["/v1/messages"] * 3


async def test_a_key_the_endpoint_echoes_is_redacted_on_the_way_to_the_vm(
    server: MessagesServer, tmp_path: Path
) -> None:
    other = "sk-ant-admin01-" + "Zz9_-" * 20  # not the host's key, but shaped like one

    def echo(req: Recorded) -> Reply:
        return Reply(body=text(f"your key is {req.api_key}! {other}.", used=usage(1, 1)))

    server.push(echo, echo)
    async for gw in gateway(server, tmp_path):
        sdk = client(gw)
        answer = await sdk.messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
        said = "your key is [REDACTED]! [REDACTED]."
        assert answer.content[0].text == said  # type: ignore[union-attr]
        async with sdk.messages.stream(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            assert await stream.get_final_text() == said
        await sdk.close()
