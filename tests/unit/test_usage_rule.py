"""One rule reads usage for the `claude` kind and the gateway (agents/claude/usage.py), and
a usage record never holds a count the store cannot (records.Usage)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from swarm_engine.agents.claude.api import MalformedResponse, validate_message
from swarm_engine.agents.claude.usage import MAX_COUNT, read_usage
from swarm_engine.gateway.meter import EventUsage, Meter
from swarm_engine.records import MAX_STEP_TOKENS, Usage

NOT_COUNTS = [10**30, 2**63, MAX_COUNT + 1, 100.0, True, -1, "5", [], {}]


def test_the_bound_is_the_most_a_step_is_believed_to_use() -> None:
    assert MAX_COUNT == MAX_STEP_TOKENS == 2**40


@pytest.mark.parametrize("value", NOT_COUNTS)
def test_a_value_that_is_no_count_is_refused_by_the_claude_kind_and_flagged_by_the_gateway(
    value: Any,
) -> None:
    raw = {"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": value}
    read = read_usage(raw)
    assert read.usage == Usage(3, 4, 0, 0, turns=1)
    assert read.problem is not None and read.problem.startswith("cache_read_input_tokens is ")
    with pytest.raises(MalformedResponse, match=r"no valid usage \(cache_read_input_tokens is"):
        validate_message({"type": "message", "content": [], "usage": raw})
    meter = Meter()
    meter.response().update("claude-sonnet-4-6", raw)
    assert meter.usage.input_tokens == 3 and meter.usage.cache_read_input_tokens == 0


def test_absent_or_null_counts_are_0_and_the_claude_kind_needs_input_and_output() -> None:
    assert read_usage({"input_tokens": 1, "output_tokens": None}).usage == Usage(1, 0, turns=1)
    assert read_usage({}).problem is None
    assert read_usage({"output_tokens": 1}, ("input_tokens",)).problem == "input_tokens is missing"
    assert read_usage({"input_tokens": MAX_COUNT, "output_tokens": 0}).problem is None
    assert read_usage("usage").problem == "usage is not an object"


def test_a_stream_whose_delta_reports_no_count_is_flagged_and_counts_the_rest() -> None:
    reader = EventUsage()
    start = {"type": "message_start", "message": {"model": "m", "usage": usage_of(5, 1)}}
    delta = {"type": "message_delta", "usage": {"output_tokens": 2**63}}
    for event in (start, delta):
        reader.feed(f"event: x\ndata: {json.dumps(event)}\n\n".encode())
    meter = Meter()
    counted = meter.response()
    assert reader.usage is not None
    counted.update(reader.model, reader.usage)
    assert (meter.usage.input_tokens, meter.usage.output_tokens) == (5, 0)
    assert counted.problem is not None and "output_tokens is 9223372036854775808" in counted.problem


def usage_of(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens}


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30, 1.0, True, None, "1"])
def test_a_usage_record_refuses_a_count_the_store_cannot_hold(value: Any) -> None:
    with pytest.raises(ValueError, match="is not a storable count"):
        Usage(input_tokens=value)
    with pytest.raises(ValueError, match="output_tokens"):
        Usage() + Usage(output_tokens=2**62) + Usage(output_tokens=2**62)
    assert Usage(input_tokens=2**63 - 1).input_tokens == 2**63 - 1
    assert Usage(turns=-3).turns == -3  # (a gateway's delta may be negative)
