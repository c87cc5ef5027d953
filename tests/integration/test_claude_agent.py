"""The Claude agent end to end: the real SDK, a scripted Messages API server, a real VM
from the process backend. No test sleeps; server-side checks run when a request arrives."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.cli import wait_until
from tests.support.messages_server import (
    MessagesServer,
    Recorded,
    Reply,
    api_error,
    message,
    text,
    tool_use,
    usage,
)

from swarm_engine.agents.base import StepContext, StepOutcome
from swarm_engine.agents.claude.agent import ClaudeAgent
from swarm_engine.agents.claude.api import MAX_RESPONSE_BYTES
from swarm_engine.agents.claude.keys import resolve_api_key
from swarm_engine.agents.claude.pricing import PRICES, cost_usd
from swarm_engine.agents.claude.settings import parse_host_config
from swarm_engine.errors import AgentError, ConfigError
from swarm_engine.models import AgentSpec, Usage
from swarm_engine.vm.base import VM

KEY = "sk-ant-test-0123456789abcdefSECRET"
FAST_RETRY = {"max_retries": 3, "backoff_seconds": 0.001, "max_backoff_seconds": 0.01}
MODEL = "claude-sonnet-4-6"


@pytest.fixture
def server() -> Iterator[MessagesServer]:
    with MessagesServer(api_key=KEY) as srv:
        yield srv
        assert srv.errors == []


def spec(server: MessagesServer, **config: Any) -> AgentSpec:
    output_files = config.pop("output_files", [])
    env = config.pop("env", {})
    base = {"model": MODEL, "retry": FAST_RETRY, "max_turns": 10}
    return AgentSpec(
        name="claude-test",
        kind="claude",
        config={**base, **config},
        output_files=output_files,
        env=env,
    )


def context(
    vm: VM, agent: AgentSpec, tmp_path: Path, lines: list[str] | None = None
) -> StepContext:
    def log(stream: str, text_: str) -> None:
        if lines is not None:
            lines.append(f"{stream}: {text_}")

    return StepContext(
        vm=vm,
        agent=agent,
        inputs={"greeting": "hello"},
        ticket={"title": "Write a script", "description": "Write hello.sh and run it."},
        step_id="code",
        run_id=1,
        artifacts_dir=tmp_path / "artifacts",
        timeout_seconds=60,
        log=log,
    )


def on_loop(vm: VM, loop: asyncio.AbstractEventLoop) -> Callable[[str], bytes]:
    """Read a VM file from the server thread while the agent's loop awaits the reply."""

    def read(path: str) -> bytes:
        return asyncio.run_coroutine_threadsafe(vm.get_file(path), loop).result(timeout=10)

    return read


def agent_with_key(server: MessagesServer | None = None, **host: Any) -> ClaudeAgent:
    """A Claude agent with the key on the host and, given a server, its URL as the host's
    endpoint (only the host sets where the key goes)."""
    if server is not None:
        host["base_url"] = server.url
    return ClaudeAgent(host_config=host, environ={"ANTHROPIC_API_KEY": KEY})


def usage_of(outcome: StepOutcome) -> dict[str, int]:
    u = outcome.usage
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_creation_input_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens,
    }


def read_tree(root: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


SCRIPT = 'echo "hello from $SWARM_VM_ID in $(pwd)"\nls\n'


async def test_scripted_session_writes_runs_and_answers(
    vm: VM, server: MessagesServer, tmp_path: Path
) -> None:
    read = on_loop(vm, asyncio.get_running_loop())
    seen: dict[str, Any] = {}

    def after_write(req: Recorded) -> dict[str, Any]:
        (result,) = req.tool_results()
        seen["write_result"] = result
        seen["file_during_run"] = read("hello.sh")
        seen["on_disk"] = (Path(vm.info().workspace or "") / "hello.sh").read_bytes()
        return tool_use(("bash", {"command": "sh hello.sh"}), used=usage(200, 30, 0, 150))

    def after_run(req: Recorded) -> dict[str, Any]:
        (result,) = req.tool_results()
        seen["run_result"] = result
        return text("hello.sh prints a greeting; it ran fine.", used=usage(300, 12, 5, 100))

    server.push(
        tool_use(
            ("write_file", {"path": "hello.sh", "content": SCRIPT}),
            say="I will write the script.",
            used=usage(120, 40, 50, 0),
        ),
        after_write,
        after_run,
    )
    lines: list[str] = []
    agent = agent_with_key(server)
    agent.preflight(spec(server))
    outcome = await agent.run(context(vm, spec(server, output_files=["hello.sh"]), tmp_path, lines))

    assert outcome.ok, outcome.error
    assert outcome.exit_code == 0
    # The file existed in the VM while the loop was still running.
    assert seen["file_during_run"] == SCRIPT.encode() == seen["on_disk"]
    assert seen["write_result"]["content"] == f"wrote {len(SCRIPT)} bytes to hello.sh"
    # The tool result the server got is the real output of the command in the VM.
    real = await vm.exec("sh hello.sh")
    assert real.stdout.decode().startswith("hello from vm-test in /")
    assert seen["run_result"]["content"] == real.stdout.decode().rstrip("\n") + "\n[exit code: 0]"
    assert "is_error" not in seen["run_result"]
    # Outputs: the final answer and the declared file, read from the VM.
    assert outcome.outputs["answer"] == "hello.sh prints a greeting; it ran fine."
    assert outcome.outputs["files"] == {"hello.sh": SCRIPT}
    # Usage: exactly the sums the server reported; cost from the price table.
    assert usage_of(outcome) == server.reported_usage()
    assert server.reported_usage() == {
        "input_tokens": 620,
        "output_tokens": 82,
        "cache_creation_input_tokens": 55,
        "cache_read_input_tokens": 250,
    }
    assert outcome.usage.turns == 3
    assert outcome.usage.stop_reason == "end_turn"
    assert outcome.usage.cost_usd == pytest.approx(cost_usd(outcome.usage, PRICES[MODEL]))
    assert outcome.usage.cost_usd == pytest.approx(
        (620 * 3 + 82 * 15 + 55 * 3.75 + 250 * 0.3) / 1e6
    )
    # What the SDK sent: the key as a header, the task, our tools, the tool_use ids echoed.
    reqs = server.message_requests()
    assert len(reqs) == 3
    assert all(r.api_key == KEY for r in reqs)
    first = reqs[0].body
    assert first["model"] == MODEL
    assert "Write hello.sh and run it." in first["messages"][0]["content"]
    assert '"greeting": "hello"' in first["messages"][0]["content"]
    assert [t["name"] for t in first["tools"]] == [
        "bash",
        "read_file",
        "write_file",
        "edit_file",
        "list_dir",
    ]
    tool_id = reqs[1].body["messages"][1]["content"][1]["id"]
    assert reqs[1].tool_results()[0]["tool_use_id"] == tool_id
    # The transcript artifact and the log lines.
    transcript = json.loads((tmp_path / "artifacts" / "transcript.json").read_text())
    assert transcript["usage"]["input_tokens"] == 620
    assert len(transcript["messages"]) == 6
    assert [t["turn"] for t in transcript["turns"]] == [1, 2, 3]
    assert any("tool bash" in line for line in lines)


@pytest.mark.parametrize(
    "fault",
    [
        api_error(429, "rate_limit_error", "slow down", {"retry-after": "0.001"}),
        api_error(529, "overloaded_error", "Overloaded"),
        api_error(500, "api_error", "Internal server error"),
        api_error(503, "api_error", "unavailable"),
        Reply(status=200, raw=b'{"type": "message", "content": [', content_type="application/json"),
        Reply(status=200, body={"type": "message", "content": [{"type": "text", "text": "x"}]}),
        Reply(status=200, body=message([{"type": "tool_use", "name": "bash"}], "tool_use")),
        Reply(status=200, body="<html>bad gateway</html>", content_type="text/html"),
        Reply(status=200, body=text("late"), delay=5),
    ],
    ids=["429", "529", "500", "503", "bad-json", "no-usage", "bad-block", "html", "timeout"],
)
async def test_transient_fault_is_retried_and_counted_once(
    vm: VM, server: MessagesServer, tmp_path: Path, fault: Reply
) -> None:
    server.push(fault, text("all good", used=usage(11, 7)))
    # a short request timeout only where it is the fault: on a loaded host a 0.5 s cap cut
    # the good reply's request short too (one retry more than the fault's)
    timeout = 0.5 if fault.delay else 30.0
    outcome = await agent_with_key(server).run(
        context(vm, spec(server, request_timeout=timeout), tmp_path)
    )
    assert outcome.ok, outcome.error
    assert outcome.outputs["answer"] == "all good"
    assert len(server.message_requests()) == 2
    # A 200 that was received but rejected as malformed still reported (billed) usage.
    received = isinstance(fault.body, dict) and not fault.delay
    rejected = fault.body.get("usage", {}) if received else {}
    assert outcome.usage.input_tokens == 11 + int(rejected.get("input_tokens", 0))
    assert outcome.usage.turns == 1
    transcript = json.loads((tmp_path / "artifacts" / "transcript.json").read_text())
    assert [e["type"] for e in transcript["events"] if e["type"] == "retry"] == ["retry"]


async def test_a_body_sent_a_byte_at_a_time_is_cut_at_the_request_timeout(
    vm: VM, server: MessagesServer, tmp_path: Path
) -> None:
    """`request_timeout` bounds the whole request: the SDK's own timeout bounds each read,
    so a body dripping a byte every 50 ms never timed out (a tester's ran 90 s)."""
    server.push(Reply(status=200, body=text("slow", used=usage(3, 2)), drip=0.05))
    server.push(text("all good", used=usage(11, 7)))
    outcome = await agent_with_key(server).run(
        context(vm, spec(server, request_timeout=0.5), tmp_path)
    )
    assert outcome.ok and outcome.outputs["answer"] == "all good", outcome.error
    transcript = json.loads((tmp_path / "artifacts" / "transcript.json").read_text())
    (retry,) = [e for e in transcript["events"] if e["type"] == "retry"]
    assert "request timed out after 0.5s" in json.dumps(retry), retry


async def test_a_response_over_its_size_limit_fails_at_once_unretried(
    vm: VM, server: MessagesServer, tmp_path: Path
) -> None:
    huge = text("x" * (MAX_RESPONSE_BYTES + 1), used=usage(3, 2))
    server.push(huge)
    server.fallback = text("never asked for", used=usage(1, 1))
    outcome = await agent_with_key(server).run(context(vm, spec(server), tmp_path))
    assert not outcome.ok
    assert outcome.error is not None and "the response is over 16 MiB" in outcome.error
    assert len(server.message_requests()) == 1


async def test_persistent_500_fails_cleanly_with_usage(
    vm: VM, server: MessagesServer, tmp_path: Path
) -> None:
    server.push(tool_use(("bash", {"command": "echo hi"}), used=usage(100, 20, 0, 0)))
    server.fallback = api_error(500, "api_error", "Internal server error")
    outcome = await agent_with_key(server).run(context(vm, spec(server), tmp_path))
    assert not outcome.ok
    assert outcome.error is not None
    assert "after 4 attempts" in outcome.error and "HTTP 500" in outcome.error
    assert len(server.message_requests()) == 1 + 4
    assert usage_of(outcome) == server.reported_usage() == usage(100, 20, 0, 0)
    assert outcome.usage.turns == 1
    assert outcome.usage.stop_reason == "api_error"
    assert outcome.usage.cost_usd == pytest.approx((100 * 3 + 20 * 15) / 1e6)
    transcript = json.loads((tmp_path / "artifacts" / "transcript.json").read_text())
    assert transcript["error"] == outcome.error
    assert transcript["usage"]["input_tokens"] == 100


async def test_client_error_is_not_retried(vm: VM, server: MessagesServer, tmp_path: Path) -> None:
    server.push(api_error(400, "invalid_request_error", "max_tokens: too large"))
    outcome = await agent_with_key(server).run(context(vm, spec(server), tmp_path))
    assert outcome.error == (
        "API request failed: HTTP 400: invalid_request_error: max_tokens: too large"
    )
    assert len(server.message_requests()) == 1
    assert outcome.usage == Usage(stop_reason="api_error")


async def test_token_budget_exceeded_mid_loop(
    vm: VM, server: MessagesServer, tmp_path: Path
) -> None:
    server.push(
        tool_use(("bash", {"command": "echo one > one.txt"}), used=usage(50, 10)),
        tool_use(("bash", {"command": "echo two > two.txt"}), used=usage(80, 20)),
    )
    outcome = await agent_with_key(server).run(
        context(vm, spec(server, budget={"max_tokens": 150}), tmp_path)
    )
    assert outcome.usage.stop_reason == "budget_exceeded"
    assert outcome.error == "token budget exceeded: 160 of 150 tokens used"
    assert len(server.message_requests()) == 2
    assert await vm.get_file("one.txt") == b"one\n"
    assert (await vm.exec("test -e two.txt")).exit_code != 0  # stopped before the 2nd tool
    assert usage_of(outcome) == server.reported_usage()
    assert outcome.usage.turns == 2


async def test_cost_budget_uses_overridden_prices(
    vm: VM, server: MessagesServer, tmp_path: Path
) -> None:
    server.push(tool_use(("list_dir", {}), used=usage(1000, 1000)))
    prices = {MODEL: {"input": 1000.0, "output": 1000.0}}  # $0.001 a token
    outcome = await agent_with_key(server).run(
        context(vm, spec(server, prices=prices, budget={"max_usd": 1.5}), tmp_path)
    )
    assert outcome.usage.stop_reason == "budget_exceeded"
    assert outcome.usage.cost_usd == pytest.approx(2.0)
    assert outcome.error == "cost budget exceeded: $2.0000 of $1.5 used"


async def test_host_prices_apply_when_agent_sets_none(
    vm: VM, server: MessagesServer, tmp_path: Path
) -> None:
    server.push(text("ok", used=usage(1_000_000, 0)))
    agent = agent_with_key(server, prices={MODEL: {"input": 7.0, "output": 1.0}})
    outcome = await agent.run(context(vm, spec(server), tmp_path))
    assert outcome.usage.cost_usd == pytest.approx(7.0)


async def test_max_turns_stops_the_loop(vm: VM, server: MessagesServer, tmp_path: Path) -> None:
    server.push(*(tool_use(("bash", {"command": f"echo {i}"})) for i in range(3)))
    outcome = await agent_with_key(server).run(context(vm, spec(server, max_turns=2), tmp_path))
    assert outcome.usage.stop_reason == "max_turns"
    assert outcome.error == "max_turns (2) reached before the task ended"
    assert len(server.message_requests()) == 2
    assert outcome.usage.turns == 2
    assert server._script  # the third turn was never asked for


async def test_tool_errors_go_back_to_the_model(
    vm: VM, server: MessagesServer, tmp_path: Path
) -> None:
    seen: list[dict[str, Any]] = []

    def check(req: Recorded) -> dict[str, Any]:
        seen.extend(req.tool_results())
        return text("done")

    server.push(
        tool_use(
            ("read_file", {"path": "../../etc/passwd"}),
            ("write_file", {"path": "/etc/evil", "content": "x"}),
            ("edit_file", {"path": "missing.txt", "old_text": "a", "new_text": "b"}),
            ("bash", {"command": "echo out; echo err >&2; exit 3"}),
        ),
        check,
    )
    outcome = await agent_with_key(server).run(context(vm, spec(server), tmp_path))
    assert outcome.ok, outcome.error
    assert [r.get("is_error", False) for r in seen] == [True, True, True, False]
    assert "outside the VM workspace" in seen[0]["content"]
    assert "outside the VM workspace" in seen[1]["content"]
    assert seen[3]["content"] == "out\n[stderr]\nerr\n[exit code: 3]"


async def test_edit_file_keeps_a_script_executable(
    vm: VM, server: MessagesServer, tmp_path: Path
) -> None:
    await vm.put_file("run.sh", b"#!/bin/sh\necho before\n", 0o755)
    server.push(
        tool_use(("edit_file", {"path": "run.sh", "old_text": "before", "new_text": "after"})),
        tool_use(("bash", {"command": "./run.sh"})),
        text("done"),
    )
    outcome = await agent_with_key(server).run(context(vm, spec(server), tmp_path))
    assert outcome.ok, outcome.error
    ran = server.message_requests()[-1].tool_results()[0]["content"]
    assert ran == "after\n[exit code: 0]"


async def test_missing_output_file_fails_the_step(
    vm: VM, server: MessagesServer, tmp_path: Path
) -> None:
    server.push(text("done"))
    outcome = await agent_with_key(server).run(
        context(vm, spec(server, output_files=["report.md"]), tmp_path)
    )
    assert outcome.error == "declared output file 'report.md' was not written"
    assert outcome.usage.turns == 1


async def test_key_never_leaks(
    vm: VM,
    server: MessagesServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    caplog.set_level(logging.DEBUG)
    results: list[dict[str, Any]] = []

    def echo_back(req: Recorded) -> dict[str, Any]:
        results.extend(req.tool_results())
        # A model that repeats a secret it saw must not get it into outputs or files.
        return message(
            [
                {"type": "text", "text": f"the key is {KEY}"},
                {"type": "tool_use", "id": "toolu_x", "name": "write_file",
                 "input": {"path": "notes.txt", "content": "nothing secret"}},
            ],
            "tool_use",
        )  # fmt: skip

    server.push(
        tool_use(("bash", {"command": "env; cat .swarm/inputs.json"})),
        echo_back,
        text(f"done, key {KEY}"),
    )
    agent = AgentSpec(
        name="claude-test",
        kind="claude",
        config={"model": MODEL, "retry": FAST_RETRY},
        env={"ANTHROPIC_API_KEY": KEY, "OTHER": "visible"},
        output_files=["notes.txt"],
    )
    ClaudeAgent(host_config={}).preflight(agent)
    lines: list[str] = []
    outcome = await ClaudeAgent(host_config={}).run(context(vm, agent, tmp_path, lines))
    assert outcome.ok, outcome.error

    assert server.message_requests()[0].api_key == KEY  # it was used...
    env_output = results[0]["content"]
    assert "OTHER=visible" in env_output and "SWARM_VM_ID=vm-test" in env_output
    own_env = (await vm.exec("env")).stdout.decode()
    files = read_tree(Path(vm.info().workspace or ""))
    transcript = (tmp_path / "artifacts" / "transcript.json").read_text()
    places = {
        "vm env seen by the model": env_output,
        "vm env": own_env,
        "workspace files": files,
        "transcript": transcript,
        "outputs": json.dumps(outcome.outputs),
        "step log": "".join(lines),
        "python logs": caplog.text,
        "request bodies": "".join(r.raw.decode() for r in server.requests),
    }
    for where, content in places.items():
        assert KEY not in content, f"key leaked into {where}"
    assert outcome.outputs["answer"] == "done, key [REDACTED]"
    assert "[REDACTED]" in transcript


async def test_key_from_host_command_and_base_url_from_env(
    vm: VM, server: MessagesServer, tmp_path: Path
) -> None:
    server.push(text("ok"))
    agent = ClaudeAgent(
        host_config={"api_key_command": ["printf", "%s", KEY]},
        environ={"ANTHROPIC_BASE_URL": server.url},
    )
    spec_ = AgentSpec(name="c", kind="claude", config={"model": MODEL})
    agent.preflight(spec_)
    outcome = await agent.run(context(vm, spec_, tmp_path))
    assert outcome.ok, outcome.error
    assert server.message_requests()[0].api_key == KEY


async def test_a_key_source_is_read_when_the_step_runs_never_at_the_claim(
    vm: VM, tmp_path: Path
) -> None:
    """The claim (on the engine's store thread, for every ticket) only checks that the
    host gives a key somehow; the file is read, or the command run, when the step runs,
    off the event loop, and a bad one fails that step with one line (tester h-210: a
    FIFO as `api_key_file` held the store thread, so every ticket of the engine, and a
    hanging command every ticket for 30 s). A FIFO is refused unread."""
    spec_ = AgentSpec(name="c", kind="claude", config={"model": MODEL})
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    empty = tmp_path / "empty"
    empty.write_text("")
    hangs = ["sleep", "1000"]
    for host, said in (
        ({"api_key_file": str(fifo)}, f"api_key_file {fifo}: not a regular file"),
        ({"api_key_file": str(empty)}, f"api_key_file {empty} is empty"),
    ):
        agent = ClaudeAgent(host_config=host, environ={})
        agent.preflight(spec_)  # at once: nothing read
        outcome = await agent.run(context(vm, spec_, tmp_path))
        assert not outcome.ok and outcome.error is not None
        assert outcome.error.startswith(said) and "\n" not in outcome.error, outcome.error
    ClaudeAgent(host_config={"api_key_command": hangs}, environ={}).preflight(spec_)  # not run
    # a command that ends, leaving a child that keeps its stdout open: its key is taken
    lasting = ["sh", "-c", f"setsid sleep 3 & echo {KEY}"]
    assert resolve_api_key(parse_host_config({"api_key_command": lasting}), {}) == KEY


def test_a_stopped_step_stops_its_key_command_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step cancelled (its ticket's timeout, a cancel, the engine's stop) while its key
    command hangs ends that command with its group, so its reader thread is free: the
    engine's stop waited out the command's whole timeout before it could exit (a thread
    that reads a key is joined at exit)."""
    from swarm_engine.agents.claude import keys

    monkeypatch.setattr(keys, "COMMAND_TIMEOUT", 3600.0)  # (only the cancel can end it)
    started = tmp_path / "pid"
    hangs = [
        "sh",
        "-c",
        f"echo $$ > {started}.tmp && mv {started}.tmp {started} && exec sleep 3600",
    ]
    host = parse_host_config({"api_key_command": hangs})

    async def cancelled_while_it_hangs() -> int:
        reading = asyncio.ensure_future(keys.resolve_api_key_async(host, {}))
        await asyncio.to_thread(wait_until, started.exists, 30, "the key command to start")
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        return int(started.read_text())

    pid = asyncio.run(cancelled_while_it_hangs())
    # every reader thread is free again: KEY_READERS jobs that wait for one another all run
    # (well within the command's 3600 s; a thread still running it would keep one waiting)
    together = threading.Barrier(keys.KEY_READERS, timeout=30)
    for job in [keys._readers.submit(together.wait) for _ in range(keys.KEY_READERS)]:
        job.result(timeout=60)
    assert "zombie" in _state(pid)  # killed, with its group (reaped once its reader waits)


def _state(pid: int) -> str:
    """The process's state line, or `zombie` once it is gone."""
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (OSError, IndexError):
        return "zombie (gone)"


def test_preflight_errors_are_one_clear_line(tmp_path: Path) -> None:
    spec_ = AgentSpec(name="c", kind="claude", config={})
    with pytest.raises(AgentError, match=r"^ANTHROPIC_API_KEY is not set: ") as err:
        ClaudeAgent(host_config={}, environ={}).preflight(spec_)
    assert "\n" not in str(err.value)
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    ClaudeAgent(host_config={"api_key_file": str(key_file)}, environ={}).preflight(spec_)
    bad = AgentSpec(name="c", kind="claude", config={"api_key_command": "cat /etc/passwd"})
    with pytest.raises(ConfigError, match="only be set on the host"):
        agent_with_key().preflight(bad)
    unknown = AgentSpec(
        name="c", kind="claude", config={"model": "claude-new-9", "budget": {"max_usd": 1}}
    )
    with pytest.raises(ConfigError, match="needs a price for model 'claude-new-9'"):
        agent_with_key().preflight(unknown)
    with pytest.raises(ConfigError, match="tools"):
        agent_with_key().preflight(AgentSpec(name="c", kind="claude", config={"tools": ["rm"]}))


async def test_missing_key_at_run_time_is_an_outcome(vm: VM, tmp_path: Path) -> None:
    spec_ = AgentSpec(name="c", kind="claude", config={})
    outcome = await ClaudeAgent(host_config={}, environ={}).run(context(vm, spec_, tmp_path))
    assert outcome.error is not None and outcome.error.startswith("ANTHROPIC_API_KEY is not set")


async def test_package_files_and_inputs_are_in_the_workspace(
    vm: VM, server: MessagesServer, tmp_path: Path
) -> None:
    package = tmp_path / "packages" / "claude-test" / "1.0.0"  # where registration puts it
    package.mkdir(parents=True)
    (package / "NOTES.md").write_text("house rules\n")
    server.push(text("ok"))
    agent = spec(server).model_copy(update={"package_path": str(package)})
    ctx = context(vm, agent, tmp_path)
    ctx.packages_dir = tmp_path / "packages"
    outcome = await agent_with_key(server).run(ctx)
    assert outcome.ok, outcome.error
    assert await vm.get_file("NOTES.md") == b"house rules\n"
    assert json.loads(await vm.get_file(".swarm/inputs.json")) == {"greeting": "hello"}


async def test_a_package_path_of_a_row_outside_the_packages_folder_fails_the_step(
    vm: VM, server: MessagesServer, tmp_path: Path
) -> None:
    """A row's `package_path` naming any other folder (`/etc`) fails the step with one
    line; nothing is uploaded and the model is never asked."""
    agent = spec(server).model_copy(update={"package_path": "/etc"})
    ctx = context(vm, agent, tmp_path)
    ctx.packages_dir = tmp_path / "packages"
    outcome = await agent_with_key(server).run(ctx)
    assert outcome.error is not None and "is not its registered package folder" in outcome.error
    assert "\n" not in outcome.error
    assert server.requests == []


def cut_reply(reset: bool) -> Reply:
    """A 200 announcing 5000 bytes, sending 10, then a reset (RST) or a close (FIN)."""
    return Reply(status=200, raw=b'{"id": "ms' + b" " * 4990, cut=10, reset=reset)


@pytest.mark.parametrize("reset", [True, False], ids=["rst", "fin"])
async def test_a_body_cut_short_is_retried_like_a_connection_error(
    vm: VM, server: MessagesServer, tmp_path: Path, reset: bool
) -> None:
    server.push(cut_reply(reset), text("all good", used=usage(11, 7)))
    outcome = await agent_with_key(server).run(context(vm, spec(server), tmp_path))
    assert outcome.ok, outcome.error
    assert outcome.outputs["answer"] == "all good"
    assert len(server.message_requests()) == 2
    assert usage_of(outcome) == usage(11, 7)
    transcript = json.loads((tmp_path / "artifacts" / "transcript.json").read_text())
    (retry,) = [e for e in transcript["events"] if e["type"] == "retry"]
    assert "connection error: the response broke off after 10 of 5000 bytes" in json.dumps(retry)


@pytest.mark.parametrize("reset", [True, False], ids=["rst", "fin"])
async def test_a_body_always_cut_short_fails_with_one_clear_line_after_the_retries(
    vm: VM,
    server: MessagesServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    reset: bool,
) -> None:
    server.fallback = cut_reply(reset)
    caplog.set_level(logging.DEBUG)
    outcome = await agent_with_key(server).run(context(vm, spec(server), tmp_path))
    assert not outcome.ok and outcome.error is not None
    assert len(server.message_requests()) == 1 + FAST_RETRY["max_retries"]
    assert outcome.error.startswith(
        "API request failed after 4 attempts: connection error: "
        "the response broke off after 10 of 5000 bytes: "
    ), outcome.error
    said = outcome.error.rsplit("bytes: ", 1)[1]
    assert said.strip() and "\n" not in outcome.error
    assert said.startswith("ReadError" if reset else "RemoteProtocolError"), said
    assert outcome.usage.stop_reason == "api_error"
    assert "failed unexpectedly" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info], caplog.text


@pytest.mark.parametrize(
    "counts",
    [
        {"input_tokens": 10**30},
        {"output_tokens": 2**63},
        {"cache_read_input_tokens": 2**40 + 1},
        {"output_tokens": 100.0},
        {"input_tokens": True},
        {"cache_creation_input_tokens": "5"},
    ],
    ids=["10^30", "2^63", "past-2^40", "float", "bool", "string"],
)
async def test_usage_that_is_no_count_is_malformed_and_never_counted(
    vm: VM, server: MessagesServer, tmp_path: Path, counts: dict[str, Any]
) -> None:
    bad = text("bad usage", used=usage(1, 1))
    bad["usage"].update(counts)
    server.fallback = bad
    outcome = await agent_with_key(server).run(context(vm, spec(server), tmp_path))
    assert not outcome.ok and outcome.error is not None
    assert len(server.message_requests()) == 1 + FAST_RETRY["max_retries"]
    (key,) = counts
    assert f"malformed response: response has no valid usage ({key} is " in outcome.error
    assert "not a count" in outcome.error
    assert usage_of(outcome) == dict.fromkeys(usage(), 0)  # nothing of it counted
    assert outcome.usage.stop_reason == "api_error"


async def test_a_tool_name_holding_a_line_break_stays_on_its_own_log_line(
    vm: VM, server: MessagesServer, tmp_path: Path
) -> None:
    """The model names a tool `bash\\nstep main done ...`: its log line was written raw, so
    `logs` showed a second line that looked like the engine's own. Each line the agent
    logs is one line now, its breaks written as escapes."""
    forged = "bash; touch /tmp/x #\nstep main done in 1 ms\u2028[agent] ok"
    server.push(tool_use((forged, {"command": "true"})), text("done"))
    lines: list[str] = []
    outcome = await agent_with_key(server).run(context(vm, spec(server), tmp_path, lines))
    assert outcome.error is None, outcome.error
    logged = "".join(lines)
    assert "step main done" in logged  # said, as data...
    assert not any(line.startswith("step main done") for line in logged.splitlines())
    assert not any(
        "[agent] ok" in line and not line.startswith("agent: ") for line in logged.splitlines()
    )
