"""The Claude agent's parts on their own: settings, prices, keys, redaction, response
checks, backoff, file tools, and the test server's streaming form."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anthropic
import pytest
from tests.support.cli import wait_until
from tests.support.messages_server import MessagesServer, text, tool_use, usage

from swarm_engine.agents.claude import DEFAULT_CONFIG, keys
from swarm_engine.agents.claude.api import MalformedResponse, backoff, validate_message
from swarm_engine.agents.claude.keys import MAX_KEY_BYTES, resolve_api_key
from swarm_engine.agents.claude.pricing import PRICES, cost_usd, price_for
from swarm_engine.agents.claude.redact import REDACTED, Redactor
from swarm_engine.agents.claude.settings import (
    ALL_TOOLS,
    Price,
    RetrySettings,
    parse_config,
    parse_host_config,
)
from swarm_engine.agents.claude.tools import ToolBox
from swarm_engine.errors import AgentError, ConfigError, VMError
from swarm_engine.models import Usage
from swarm_engine.vm.base import ExecResult, VMInfo


def test_default_config_is_valid_and_complete() -> None:
    cfg = parse_config(DEFAULT_CONFIG)
    assert cfg.tools == ALL_TOOLS
    assert price_for(cfg.model) is not None  # so budget.max_usd can be enforced


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"config max_turns: "):
        parse_config({"max_turns": 0}, "a")
    with pytest.raises(ConfigError, match=r"config nope: Extra inputs"):
        parse_config({"nope": 1}, "a")
    with pytest.raises(ConfigError, match="api_key_file can only be set on the host"):
        parse_config({"api_key_file": "/k"}, "a")
    with pytest.raises(ConfigError, match=r"setting agents\.claude\.prices"):
        parse_host_config({"prices": {"m": {"input": -1, "output": 1}}})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model": ""}, "config model: String should match pattern"),
        ({"model": "claude\n--x"}, "config model: String should match pattern"),
        ({"model": "-p"}, "config model: String should match pattern"),
        ({"model": "a" * 129}, "config model: String should match pattern"),
        ({"request_timeout": "30"}, "config request_timeout: Input should be a valid number"),
        ({"tool_timeout": True}, "config tool_timeout: Input should be a valid number"),
        ({"retry": {"max_backoff_seconds": "9"}}, "config retry.max_backoff_seconds: Input"),
        ({"max_turns": "5"}, "config max_turns: Input should be a valid integer"),
        ({"budget": {"max_usd": "1"}}, "config budget.max_usd: Input should be a valid number"),
    ],
)
def test_the_model_is_a_name_and_numbers_are_numbers(config: dict[str, Any], message: str) -> None:
    """`model` as `claude-code` takes it (never empty, an option or a second line), and a
    number of seconds (or any number) given as text is refused, not read as a number."""
    with pytest.raises(ConfigError, match=f"^agent 'a' {message}"):
        parse_config(config, "a")


def test_model_names_and_aliases_are_taken() -> None:
    for model in ("claude-sonnet-4-6", "opus", "us.anthropic.claude-x-v1:0", "a/b@c"):
        assert parse_config({"model": model}).model == model
    assert parse_config({"request_timeout": 30, "tool_timeout": 1.5}).request_timeout == 30


def test_prices_dated_ids_and_overrides() -> None:
    assert price_for("claude-haiku-4-5-20251001") == PRICES["claude-haiku-4-5"]
    assert price_for("claude-opus-4-20250514") == PRICES["claude-opus-4"]
    assert price_for("claude-unknown-1") is None
    host = {"claude-unknown-1": Price(input=1, output=2)}
    agent = {"claude-unknown-1": Price(input=3, output=4)}
    assert price_for("claude-unknown-1", host, agent) == Price(input=3, output=4)
    assert price_for("claude-unknown-1", host) == Price(input=1, output=2)


def test_cost_uses_every_token_kind() -> None:
    used = Usage(1_000_000, 1_000_000, 1_000_000, 1_000_000)
    assert cost_usd(used, PRICES["claude-sonnet-4-6"]) == pytest.approx(3 + 15 + 3.75 + 0.3)
    # Cache prices default to 1.25x / 0.1x of input when a custom price omits them.
    assert cost_usd(used, Price(input=2, output=0)) == pytest.approx(2 + 2.5 + 0.2)
    assert cost_usd(used, None) == 0.0


def test_key_sources_in_order(tmp_path: Any) -> None:
    key_file = tmp_path / "k"
    key_file.write_text("from-file-key\n")
    host = parse_host_config({"api_key_file": str(key_file), "api_key_command": "echo cmd"})
    assert resolve_api_key(host, {"ANTHROPIC_API_KEY": "from-env"}) == "from-env"
    assert resolve_api_key(host, {}) == "from-file-key"
    assert resolve_api_key(parse_host_config({"api_key_command": "echo cmd-key"}), {}) == (
        "cmd-key"
    )
    with pytest.raises(AgentError, match="exited with 1"):
        resolve_api_key(parse_host_config({"api_key_command": ["false"]}), {})
    with pytest.raises(AgentError, match=r"(?i)no such file"):
        resolve_api_key(parse_host_config({"api_key_file": str(tmp_path / "none")}), {})


def test_key_sources_are_read_bounded_and_a_key_must_be_one_word(tmp_path: Any) -> None:
    """A key command that prints without end is stopped at `MAX_KEY_BYTES` (tester h-205:
    `yes` took 24 GB of the host's memory and 50 s); a key file as big is refused unread
    past it; a key holding a line break (an extra HTTP header) is refused up front with a
    line that does not quote it (before: a VM booted and three retries said `connection
    error`)."""
    endless = parse_host_config({"api_key_command": ["sh", "-c", "yes sk-ant-key"]})
    with pytest.raises(AgentError, match=f"printed more than {MAX_KEY_BYTES} bytes"):
        resolve_api_key(endless, {})
    big = tmp_path / "big"
    big.write_bytes(b"k" * (MAX_KEY_BYTES + 1))
    with pytest.raises(AgentError, match=f"holds more than {MAX_KEY_BYTES} bytes"):
        resolve_api_key(parse_host_config({"api_key_file": str(big)}), {})
    for bad in ("sk-ant-one\nX-Evil: 1", "sk ant", "sk-\u00e9"):
        with pytest.raises(AgentError, match="one word of visible ASCII") as caught:
            resolve_api_key(parse_host_config({}), {"ANTHROPIC_API_KEY": bad})
        assert bad not in str(caught.value)
    said = parse_host_config({"api_key_command": ["printf", "sk-ant-a\\nsk-ant-b"]})
    with pytest.raises(AgentError, match="api_key_command printf: the key holds"):
        resolve_api_key(said, {})


def test_redactor_scrubs_nested_values_and_key_shapes() -> None:
    r = Redactor(["hunter2-secret", "abc"])  # too-short secrets are ignored
    data = {"a": ["x hunter2-secret y", {"hunter2-secret": 1}], "b": "sk-ant-api03-AAAAbbbbCCCC"}
    assert r.data(data) == {"a": [f"x {REDACTED} y", {REDACTED: 1}], "b": REDACTED}
    assert r.text("abc") == "abc"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ([], "not a JSON object"),
        ({"type": "error"}, "unexpected response type"),
        ({"content": []}, "no valid usage"),
        ({"usage": {"input_tokens": 1, "output_tokens": -1}, "content": []}, "no valid usage"),
        ({"usage": usage(), "content": "hi"}, "no content list"),
        ({"usage": usage(), "content": [{"type": "text"}]}, "text block without text"),
        ({"usage": usage(), "content": [{"type": "tool_use", "id": "t"}]}, "tool_use block"),
    ],
)
def test_malformed_responses_are_named(body: Any, why: str) -> None:
    rejected: list[Mapping[str, Any]] = []
    with pytest.raises(MalformedResponse, match=why):
        validate_message(body, rejected.append)
    valid_usage = isinstance(body, dict) and body.get("usage") == usage()
    assert rejected == ([usage()] if valid_usage else [])


def test_valid_response_passes() -> None:
    validate_message(tool_use(("bash", {"command": "ls"})))
    validate_message(text("hi"))


def test_backoff_grows_caps_and_honours_retry_after() -> None:
    retry = RetrySettings(backoff_seconds=1, backoff_factor=2, max_backoff_seconds=5)
    assert 0.75 <= backoff(retry, 1) <= 1.0
    assert 3.0 <= backoff(retry, 3) <= 4.0
    assert 3.75 <= backoff(retry, 10) <= 5.0
    assert backoff(retry, 1, retry_after=2.5) == 2.5
    assert backoff(retry, 1, retry_after=99) == 5.0


class FilesVM:
    """Just enough of a VM for the file tools."""

    id = "fake"

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def info(self) -> VMInfo:
        return VMInfo()

    async def exec(self, command: Sequence[str] | str, **kw: Any) -> ExecResult:
        return ExecResult(0, b"", b"", 0)

    async def put_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.files[path] = data

    async def get_file(self, path: str) -> bytes:
        if path not in self.files:
            raise VMError(f"{path}: no such file in the VM workspace")
        return self.files[path]

    async def is_alive(self) -> bool:
        return True

    async def destroy(self) -> None:
        return None


async def test_file_tools() -> None:
    vm = FilesVM()
    box = ToolBox(vm, ALL_TOOLS, max_output=300)
    assert await box.call("write_file", {"path": "/workspace/a/b.txt", "content": "1\n2\n3\n"})
    assert vm.files == {"a/b.txt": b"1\n2\n3\n"}
    assert (await box.call("read_file", {"path": "a/b.txt", "offset": 2, "limit": 1})).content == (
        "2\n"
    )
    done = await box.call("edit_file", {"path": "a/b.txt", "old_text": "2\n", "new_text": "two\n"})
    assert not done.is_error and vm.files["a/b.txt"] == b"1\ntwo\n3\n"
    vm.files["c.txt"] = b"x x"
    twice = await box.call("edit_file", {"path": "c.txt", "old_text": "x", "new_text": "y"})
    assert twice.is_error and "found 2 times" in twice.content
    vm.files["big.txt"] = b"z" * 1000
    clipped = (await box.call("read_file", {"path": "big.txt"})).content
    assert "characters cut" in clipped and len(clipped) < 400
    vm.files["bin"] = b"\x00\x01"
    assert "binary file" in (await box.call("read_file", {"path": "bin"})).content
    bad = await box.call("write_file", {"path": "x"})
    assert bad.is_error and "'content'" in bad.content
    limited = ToolBox(vm, ("read_file",))
    assert [s["name"] for s in limited.specs()] == ["read_file"]
    assert (await limited.call("bash", {"command": "id"})).is_error


async def test_server_streams_the_same_message() -> None:
    reply = tool_use(("bash", {"command": "ls"}), say="Listing", used=usage(12, 34))
    with MessagesServer([reply]) as server:
        client = anthropic.AsyncAnthropic(api_key="k" * 10, base_url=server.url, max_retries=0)
        async with client.messages.stream(
            model="claude-sonnet-4-6",
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
        ) as stream:
            final = await stream.get_final_message()
        await client.close()
    assert final.stop_reason == "tool_use"
    assert final.usage.input_tokens == 12 and final.usage.output_tokens == 34
    assert final.content[0].type == "text" and final.content[0].text == "Listing"
    block = final.content[1]
    assert block.type == "tool_use" and block.input == {"command": "ls"}
    assert server.requests[0].body["stream"] is True


async def test_hung_key_commands_hold_only_the_key_readers(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Key commands that hang hold the threads kept for keys, never the event loop's
    default pool that the engine's other work shares (tester h-211: six hung commands
    held an echo ticket's file work 25 s); each fails with its one line."""
    monkeypatch.setattr(keys, "COMMAND_TIMEOUT", 3.0)
    hung = parse_host_config({"api_key_command": ["sleep", "60"]})
    reads = [
        asyncio.ensure_future(keys.resolve_api_key_async(hung, {}))
        for _ in range(keys.KEY_READERS + 4)
    ]
    assert await asyncio.to_thread(lambda: "free") == "free"  # (the default pool)
    assert not any(read.done() for read in reads)  # still hung: the pool was not theirs
    for read in reads:
        with pytest.raises(AgentError, match="did not end within 3s; it was stopped"):
            await read


def test_what_a_key_command_leaves_running_ends_with_it(tmp_path: Any) -> None:
    """A command that prints the key and leaves a child in its group (`sleep &`): the key
    is taken at its end, and the child is ended (tester h-211: one `sleep` per step
    outlived the engine)."""
    pid_file = tmp_path / "child"
    command = ["sh", "-c", f"sleep 300 & echo $! > {pid_file}; echo sk-ant-key-123456"]
    assert resolve_api_key(parse_host_config({"api_key_command": command}), {}) == (
        "sk-ant-key-123456"
    )
    child = Path(f"/proc/{pid_file.read_text().strip()}/stat")

    def ended() -> bool:  # killed: a zombie until init reaps it, or gone
        try:
            return child.read_text().split(") ")[1].startswith("Z")
        except (OSError, IndexError):
            return True

    wait_until(ended, 10, "the child the key command left to be killed")
