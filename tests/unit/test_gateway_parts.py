"""The gateway's and the claude-code kind's parts on their own: usage read from streams
however they are cut, the key scrubbed however it is split, per-response counting, the
budget's words, settings, definitions, and the flags Claude Code is run with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.messages_server import sse_events, text, usage

from swarm_engine.agents.claude.redact import KEY_PATTERN, REDACTED
from swarm_engine.agents.claude.settings import Price
from swarm_engine.agents.claude_code.agent import LAUNCH, _reported_usage, _Run
from swarm_engine.agents.claude_code.settings import parse_config, parse_host_settings
from swarm_engine.agents.kinds import check_definition
from swarm_engine.config import load_settings
from swarm_engine.errors import ConfigError
from swarm_engine.gateway.meter import Budget, EventUsage, Meter, json_usage
from swarm_engine.gateway.request_log import MAX_TEXT, RequestLog
from swarm_engine.gateway.scrub import (
    KEY_ALPHABET,
    KEY_BYTES,
    KEY_CHARS,
    KEY_SHORTEST,
    StreamScrubber,
)
from swarm_engine.gateway.settings import GatewaySettings
from swarm_engine.models import AgentSpec, Usage


def stream_bytes(message: dict[str, object], crlf: bool = False) -> bytes:
    out = "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in sse_events(message))
    return (out.replace("\n", "\r\n") if crlf else out).encode()


@given(cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=30), crlf=st.booleans())
def test_usage_is_read_from_a_stream_however_it_is_cut(cuts: list[int], crlf: bool) -> None:
    data = stream_bytes(text("hello there", used=usage(123, 45, 6, 789)), crlf)
    reader = EventUsage()
    last = 0
    for cut in sorted({min(c, len(data)) for c in cuts}):
        reader.feed(data[last:cut])
        last = cut
    reader.feed(data[last:])
    reader.close()
    assert reader.model == "claude-sonnet-4-6"
    assert reader.usage is not None
    assert {k: reader.usage[k] for k in usage()} == usage(123, 45, 6, 789)


def test_a_stream_cut_short_counts_what_it_reported() -> None:
    data = stream_bytes(text("x", used=usage(50, 40)))
    reader = EventUsage()
    reader.feed(data[: data.index(b"event: message_delta")])
    assert reader.usage is not None and reader.usage["input_tokens"] == 50
    assert reader.usage["output_tokens"] == 1  # what message_start said; the rest never came


def test_an_oversized_event_is_skipped_and_reading_goes_on() -> None:
    reader = EventUsage()
    reader.feed(b"data: " + b"x" * (5 * 1024 * 1024))
    reader.feed(b"\n\n" + stream_bytes(text("x", used=usage(7, 8))))
    assert reader.usage is not None and reader.usage["input_tokens"] == 7


def test_json_usage_takes_what_the_body_says() -> None:
    model, raw = json_usage(json.dumps(text("x", used=usage(1, 2, 3, 4))).encode())
    assert model == "claude-sonnet-4-6" and raw == usage(1, 2, 3, 4)
    assert json_usage(b"not json") == (None, None)
    assert json_usage(b'{"input_tokens": 42}') == (None, None)  # count_tokens: no usage


SECRET = b"sk-ant-api03-SECRET-0123456789abcdef"
OTHER_SHAPES = [b"sk-ant-", b"sk-ant-1234567", b"sk-ant-12345678", b"sk-ant-api03-" + b"x" * 90]
SCRUBBED = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([SECRET, b"sk-", b"-_aZ9", b'"', b"\n", *OTHER_SHAPES]),
)


def scrubbed_whole(data: bytes, secret: bytes) -> bytes:
    """What `Redactor.text` makes of the stream in one piece."""
    out = data.replace(secret, REDACTED.encode()) if secret else data
    return KEY_BYTES.sub(REDACTED.encode(), out)


def scrub_in_pieces(scrub: StreamScrubber, data: bytes, cuts: list[int]) -> bytes:
    out, last = b"", 0
    for cut in sorted({min(c, len(data)) for c in cuts}):
        out += scrub.feed(data[last:cut])
        last = cut
        # what it holds back stays small, however long a key-shaped run is
        assert len(scrub._keys._tail) < KEY_SHORTEST
    return out + scrub.feed(data[last:]) + scrub.flush()


@settings(max_examples=500)
@given(
    parts=st.lists(SCRUBBED, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=20),
    secret=st.sampled_from([SECRET, b"plain-host-secret-42", b""]),
)
def test_the_key_and_key_shapes_are_scrubbed_however_the_stream_splits_them(
    parts: list[bytes], cuts: list[int], secret: bytes
) -> None:
    data = b"".join(parts)
    out = scrub_in_pieces(StreamScrubber(secret), data, cuts)
    assert out == scrubbed_whole(data, secret)
    assert KEY_BYTES.search(out) is None and (not secret or secret not in out)


def test_a_key_shape_split_byte_by_byte_is_one_redaction() -> None:
    data = b'{"text": "' + OTHER_SHAPES[-1] + b'"}'
    out = scrub_in_pieces(StreamScrubber(SECRET), data, list(range(len(data))))
    assert out == b'{"text": "[REDACTED]"}'


def test_the_key_alphabet_is_the_patterns() -> None:
    assert KEY_BYTES.pattern == KEY_PATTERN.pattern.encode()
    alphabet = bytes(c for c in range(256) if KEY_BYTES.fullmatch(b"sk-ant-" + bytes([c]) * 8))
    assert alphabet == bytes(sorted(KEY_CHARS))
    assert all(KEY_ALPHABET.fullmatch(bytes([c])) for c in alphabet)
    shortest = b"sk-ant-" + b"x" * (KEY_SHORTEST - 7)
    assert KEY_BYTES.fullmatch(shortest) and not KEY_BYTES.search(shortest[:-1])


def test_a_stream_without_the_key_passes_at_once() -> None:
    scrub = StreamScrubber(SECRET)
    assert scrub.feed(b"event: ping\ndata: {}\n\n") == b"event: ping\ndata: {}\n\n"
    assert scrub.feed(b"ends with sk-ant") == b"ends with "  # could be the key's start
    assert scrub.flush() == b"sk-ant"


def test_a_response_counted_twice_adds_only_what_is_new_and_is_one_turn() -> None:
    meter = Meter(prices=({"m": Price(input=1, output=10)},))
    first = meter.response()
    first.update("m", usage(100, 1))
    first.update("m", usage(100, 30))  # the stream's message_delta
    second = meter.response()
    second.update("claude-sonnet-4-6", usage(10, 10))
    assert meter.usage.input_tokens == 110 and meter.usage.output_tokens == 40
    assert meter.usage.turns == 2
    assert meter.usage.cost_usd == pytest.approx((100 + 300) / 1e6 + (30 + 150) / 1e6)


def test_the_budget_says_what_was_used() -> None:
    meter = Meter(Budget(max_tokens=100))
    assert meter.over_budget() is None
    meter.response().update("claude-sonnet-4-6", usage(60, 40))
    assert meter.over_budget() == "token budget exceeded: 100 of 100 tokens used"
    meter = Meter(Budget(max_usd=0.001))
    meter.response().update("claude-sonnet-4-6", usage(1000, 0))
    assert meter.over_budget() == "cost budget exceeded: $0.0030 of $0.001 used"


def test_over_the_budget_is_more_than_it_and_used_up_is_reaching_it() -> None:
    meter = Meter(Budget(max_tokens=100))
    meter.response().update("claude-sonnet-4-6", usage(60, 40))
    assert meter.over_budget(above=True) is None and meter.over_budget() is not None
    meter.response().update("claude-sonnet-4-6", usage(1, 0))
    assert meter.over_budget(above=True) == "token budget exceeded: 101 of 100 tokens used"


def test_the_request_log_is_bounded_in_bytes_and_each_text_is_cut() -> None:
    log = RequestLog(max_bytes=4000)
    for i in range(100):
        log.add({"method": "GET", "path": "/v1/" + "x" * 60_000, "status": 404, "i": i})
    assert log.records and log.dropped == 100 - len(log.records)
    assert len(json.dumps(log.records)) <= 4000
    assert all(len(r["path"]) <= MAX_TEXT + 20 for r in log.records)
    assert log.records[0]["path"].endswith("... (60004 chars)")


def test_gateway_settings_load_from_the_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWARM_HOME", str(tmp_path))
    monkeypatch.delenv("SWARM_GATEWAY", raising=False)
    assert load_settings().gateway == GatewaySettings()
    (tmp_path / "config.toml").write_text("[gateway]\nports = [40000, 40009]\n")
    assert load_settings().gateway.ports == (40000, 40009)
    monkeypatch.setenv("SWARM_GATEWAY", '{"ports": [41000, 41000], "allow_unisolated": true}')
    settings = load_settings()
    assert settings.gateway.ports == (41000, 41000) and settings.gateway.allow_unisolated
    assert settings.gateway.reserves(41000) and not settings.gateway.reserves(40000)
    monkeypatch.setenv("SWARM_GATEWAY", '{"ports": [500, 600]}')
    with pytest.raises(ConfigError, match="1024 <= first <= last"):
        load_settings()


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"kind": "claude", "model_api": True}, "model_api: kind 'claude' does not take it"),
        ({"kind": "echo", "model_api": {"budget": {"max_tokens": 5}}}, "model_api: kind 'echo'"),
        (
            {"kind": "claude-code", "config": {"version": "1.0.0"}},
            "config.version: can only be set on the host",
        ),
        (
            {"kind": "claude-code", "config": {"base_url": "http://x"}},
            "config.base_url: can only be set on the host",
        ),
        (
            {"kind": "claude-code", "config": {"max_turns": 0}},
            "config.max_turns: Input should be greater",
        ),
        ({"kind": "claude-code", "config": {"modle": "x"}}, "config.modle: Extra inputs"),
        ({"kind": "claude-code", "memory_mb": 512}, "memory_mb: claude-code needs at least 1024"),
        ({"kind": "claude-code", "command": "ls"}, "command: kind 'claude-code' runs no command"),
    ],
)
def test_definitions_that_are_refused(spec: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        check_definition(AgentSpec(name="a", **{"memory_mb": 2048, **spec}))  # type: ignore[arg-type]


def test_model_api_is_true_or_a_budget() -> None:
    assert AgentSpec(name="a", model_api=True).model_api_spec is not None
    assert AgentSpec(name="a").model_api_spec is None
    spec = AgentSpec(name="a", model_api={"budget": {"max_usd": 2}})  # type: ignore[arg-type]
    assert spec.model_api_spec is not None and spec.model_api_spec.budget.max_usd == 2
    with pytest.raises(ValueError):
        AgentSpec(name="a", model_api="yes")  # type: ignore[arg-type]
    check_definition(AgentSpec(name="a", kind="shell", command="true", model_api=True))


class _Api:
    env = {"ANTHROPIC_BASE_URL": "http://127.0.0.1:29001", "ANTHROPIC_API_KEY": "sk-swarm-t0ken"}

    def usage(self) -> Usage:
        return Usage()


def _argv(config: dict[str, object]) -> list[str]:
    from swarm_engine.agents.base import StepContext

    ctx = StepContext(
        vm=None,  # type: ignore[arg-type]
        agent=AgentSpec(
            name="c", kind="claude-code", config=config, env={"ANTHROPIC_API_KEY": "x", "MINE": "1"}
        ),
        inputs={},
        ticket={},
        step_id="s",
        run_id=1,
        artifacts_dir=Path("/nonexistent"),
        timeout_seconds=10,
        model_api=_Api(),
    )
    run = _Run(ctx, parse_config(config), "/opt/claude-code/claude")
    env = run.env()
    # the gateway's token, never the agent's own ANTHROPIC_*; its other variables kept
    assert env["ANTHROPIC_API_KEY"] == "sk-swarm-t0ken" and env["MINE"] == "1"
    assert env["DISABLE_TELEMETRY"] == env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    argv = run.argv()
    assert argv[:4] == ["sh", "-c", LAUNCH, "/opt/claude-code/claude"]
    return argv[4:]


def test_claude_code_flags_follow_the_config() -> None:
    plain = _argv({})
    assert plain[:5] == ["-p", "--output-format", "stream-json", "--verbose", "--model"]
    assert plain[plain.index("--permission-mode") + 1] == "bypassPermissions"
    assert plain[plain.index("--max-turns") + 1] == "40"
    tools = _argv({"allowed_tools": ["Read", "Bash(git *)"], "system_prompt": "Be brief.",
                   "append_system_prompt": "Also tests.", "disallowed_tools": ["WebFetch"]})  # fmt: skip
    assert tools[tools.index("--permission-mode") + 1] == "dontAsk"
    assert "--allowedTools=Read,Bash(git *)" in tools and "--disallowedTools=WebFetch" in tools
    assert tools[tools.index("--system-prompt") + 1] == "Be brief."
    assert tools[tools.index("--append-system-prompt") + 1] == "Also tests."


def test_claude_code_reported_usage_sums_its_models() -> None:
    result = {
        "usage": {"input_tokens": 1},
        "modelUsage": {
            "claude-sonnet-4-6": {"inputTokens": 10, "outputTokens": 2, "cacheReadInputTokens": 5},
            "claude-haiku-4-5": {
                "inputTokens": 3,
                "outputTokens": 1,
                "cacheCreationInputTokens": 7,
            },
        },
    }
    assert _reported_usage(result) == {
        "input_tokens": 13,
        "output_tokens": 3,
        "cache_creation_input_tokens": 7,
        "cache_read_input_tokens": 5,
    }
    assert _reported_usage({"usage": {"input_tokens": 4}})["input_tokens"] == 4  # type: ignore[index]
    assert _reported_usage({}) is None


def test_claude_code_host_settings() -> None:
    host = parse_host_settings({"version": "2.1.0", "cache_dir": "/srv/cc", "install": False})
    assert host.version == "2.1.0" and str(host.cache_dir) == "/srv/cc" and not host.install
    with pytest.raises(ConfigError, match=r"agents\.claude-code\.version"):
        parse_host_settings({"version": "latest"})
