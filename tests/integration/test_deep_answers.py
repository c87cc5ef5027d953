"""A model API answer whose content is nested past what Python's `json.loads` reads (a
tool's input 5,000 levels deep: what a ticket's prompt can make a model write) is billed
by Anthropic all the same. Before, the gateway lost it (a RecursionError: the step's
client got no answer, the usage counted nowhere, so a budget never stopped a step that
drew millions of tokens) and the `claude` kind crashed with a traceback, uncounted. Now
both count the usage the answer reported, read alone, and the `claude` kind refuses such
an answer as malformed in one line. Real SDK, real gateway, the local Messages API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest
from tests.integration.test_claude_agent import KEY, agent_with_key, context, spec
from tests.integration.test_gateway import KEY as GATEWAY_KEY
from tests.integration.test_gateway import MODEL, client, gateway
from tests.support.messages_server import MessagesServer, Reply

from swarm_engine.agents.base import ModelApiNeeds
from swarm_engine.agents.claude.api import MAX_ANSWER_DEPTH
from swarm_engine.vm.base import VM

BILLED = 2_000_000


def deep_answer(levels: int) -> Reply:
    """A 200 whose tool input is `levels` lists deep, with its usage after the content."""
    nested = "[" * levels + "]" * levels
    raw = (
        '{"id": "msg_deep", "type": "message", "role": "assistant", "model": "' + MODEL + '",'
        ' "content": [{"type": "tool_use", "id": "t1", "name": "bash", "input": {"x": '
        + nested
        + '}}], "stop_reason": "tool_use", "usage": {"input_tokens": '
        + str(BILLED)
        + ', "output_tokens": 7}}'
    )
    return Reply(raw=raw.encode())


@pytest.fixture
def server() -> Iterator[MessagesServer]:
    with MessagesServer(api_key=KEY) as srv:
        yield srv


async def test_the_gateway_counts_a_deep_answers_usage_and_its_budget_stops_the_step(
    tmp_path: Path,
) -> None:
    with MessagesServer(api_key=GATEWAY_KEY) as server:
        await _through_the_gateway(server, tmp_path)


async def _through_the_gateway(server: MessagesServer, tmp_path: Path) -> None:
    server.push(deep_answer(5000), deep_answer(5000))
    async for gw in gateway(server, tmp_path, ModelApiNeeds(max_tokens=1000)):
        async with client(gw) as sdk:
            first = await sdk.messages.with_raw_response.create(
                model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
            assert first.status_code == 200  # passed on as the endpoint gave it
            with pytest.raises(anthropic.APIStatusError) as refused:  # the budget is spent
                await sdk.messages.create(
                    model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
                )
        used = gw.usage()
    assert used.input_tokens == BILLED and used.turns == 1
    assert refused.value.status_code == 402 and "budget is used up" in str(refused.value)
    assert len(server.message_requests()) == 1


@pytest.mark.parametrize("levels", [5000, MAX_ANSWER_DEPTH + 10])
async def test_the_claude_kind_counts_a_deep_answers_usage_and_fails_in_one_line(
    vm: VM, server: MessagesServer, tmp_path: Path, levels: int
) -> None:
    server.fallback = deep_answer(levels)
    agent = spec(server)  # (3 retries: 4 answers, each billed)
    outcome = await agent_with_key(server).run(context(vm, agent, tmp_path))
    assert outcome.error is not None and "\n" not in outcome.error, outcome.error
    assert "malformed response: response is nested deeper than" in outcome.error
    assert "Traceback" not in outcome.error and "RecursionError" not in outcome.error
    answers = len(server.message_requests())
    assert answers == 4
    assert outcome.usage.input_tokens == BILLED * answers
    assert json.loads(json.dumps(outcome.usage.input_tokens)) == BILLED * answers
