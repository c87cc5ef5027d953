"""The `claude` kind's conversation is bounded in bytes (`max_transcript_bytes`): a step
whose next request would carry more fails with one line, before sending it, and nothing
the model sees is cut. The real SDK, the local Messages API server, a process-backend VM."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.test_claude_agent import KEY, agent_with_key, context, spec
from tests.support.messages_server import MessagesServer, text, tool_use

from swarm_engine.agents.claude.session import TRANSCRIPT_NAME
from swarm_engine.agents.claude.settings import MAX_TRANSCRIPT_BYTES, ClaudeConfig
from swarm_engine.vm.base import VM

CAP = 64 * 1024
PRINT_30K = {"command": "head -c 30000 /dev/zero | tr '\\0' x"}


@pytest.fixture
def server() -> Iterator[MessagesServer]:
    with MessagesServer(api_key=KEY) as srv:
        yield srv
        assert srv.errors == []


def test_the_bound_has_a_sane_default() -> None:
    assert ClaudeConfig().max_transcript_bytes == MAX_TRANSCRIPT_BYTES == 8 * 1024 * 1024


async def test_tool_results_past_the_bound_fail_the_step_before_they_are_sent(
    vm: VM, server: MessagesServer, tmp_path: Path
) -> None:
    """Three turns of 30,000 bytes of tool output each: the third turn's results would
    take the conversation past 64 KiB, so the step fails there, the results never sent
    (before, only `max_turns` and `max_tool_output` bounded what each request carried)."""
    server.push(*(tool_use(("bash", PRINT_30K)) for _ in range(3)), text("never asked"))
    agent = spec(server, max_transcript_bytes=CAP, max_tool_output=40_000)
    outcome = await agent_with_key(server).run(context(vm, agent, tmp_path))
    assert outcome.usage.stop_reason == "max_transcript_bytes"
    assert outcome.error is not None and "\n" not in outcome.error
    assert outcome.error.startswith(
        f"max_transcript_bytes ({CAP}) reached: the next request would carry "
    ), outcome.error
    assert outcome.error.endswith(" bytes of conversation with turn 3's tool results")
    requests = server.message_requests()
    assert len(requests) == 3  # the fourth was never sent
    assert all(len(r.raw) < CAP + 4096 for r in requests), [len(r.raw) for r in requests]
    sent = [json.dumps(r.body["messages"], separators=(",", ":")) for r in requests]
    assert all(len(s.encode()) <= CAP for s in sent)
    doc = json.loads((tmp_path / "artifacts" / TRANSCRIPT_NAME).read_text())
    assert doc["error"] == outcome.error
    # what the model saw, whole: the last request's messages and the model's third answer
    assert doc["messages"] == [*requests[-1].body["messages"], doc["messages"][-1]]
    assert doc["messages"][-1]["role"] == "assistant"
    last_result = requests[-1].body["messages"][-1]["content"][0]["content"]
    assert last_result.startswith("x" * 30_000 + "\n")  # never cut to fit


async def test_a_task_past_the_bound_fails_before_the_first_request(
    vm: VM, server: MessagesServer, tmp_path: Path
) -> None:
    agent = spec(server, max_transcript_bytes=CAP)
    ctx = context(vm, agent, tmp_path)
    ctx.inputs = {"blob": "é" * CAP}
    outcome = await agent_with_key(server).run(ctx)
    assert outcome.usage.stop_reason == "max_transcript_bytes"
    assert outcome.error is not None
    assert outcome.error.endswith(" bytes of conversation with the task"), outcome.error
    assert server.message_requests() == []


def test_the_bound_is_checked_at_registration() -> None:
    from swarm_engine.agents.claude.settings import parse_config
    from swarm_engine.errors import ConfigError

    with pytest.raises(ConfigError, match="max_transcript_bytes"):
        parse_config({"max_transcript_bytes": 33 * 1024 * 1024})
    with pytest.raises(ConfigError, match="max_transcript_bytes"):
        parse_config({"max_transcript_bytes": "65536"})
