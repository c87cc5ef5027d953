"""`kind: claude-code` through the whole engine: the real Claude Code CLI, headless in a
process sandbox, against the local Messages API server through the step's gateway.

Claude Code is installed once per host (`/var/cache/swarm-engine/claude-code/<version>`
for root, else the user's cache), by the engine or by `python -m
swarm_engine.agents.claude_code.install`; these tests install it the same way when it is
missing, and are skipped, saying why, when that is impossible (no npm, no registry)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.support.cli import query, swarm
from tests.support.messages_server import MessagesServer, Recorded, message, text, usage

from swarm_engine.agents.claude_code import install
from swarm_engine.agents.claude_code.settings import DEFAULT_VERSION, default_cache_dir
from swarm_engine.errors import AgentError

KEY = "sk-ant-api03-claude-code-KEY-0000SECRET9999"
AGENT = """
name: coder
kind: claude-code
memory_mb: 2048
timeout_seconds: 300
config:
  model: claude-sonnet-4-6
  max_turns: 5
  budget: {max_tokens: 100000}
"""


@pytest.fixture(scope="module")
def claude_code() -> Path:
    try:
        return install.ensure(default_cache_dir(), DEFAULT_VERSION)
    except AgentError as exc:
        pytest.skip(f"Claude Code {DEFAULT_VERSION} cannot be installed here: {exc}")


def write_call(path: str, content: str, used: dict[str, int]) -> dict[str, object]:
    block = {"type": "tool_use", "id": "toolu_w1", "name": "Write",
             "input": {"file_path": path, "content": content}}  # fmt: skip
    return message([block], "tool_use", used=used)


def test_claude_code_writes_a_file_in_its_sandbox_and_is_metered(
    claude_code: Path, home: Path, tmp_path: Path
) -> None:
    seen: list[Recorded] = []

    def answer(req: Recorded) -> dict[str, object]:
        seen.append(req)
        results = req.tool_results()
        assert results and "hello.txt" in str(results[0].get("content")), results
        return text("Wrote hello.txt.", used=usage(900, 12, 0, 700))

    with MessagesServer(api_key=KEY) as server:
        server.push(
            write_call("/workspace/hello.txt", "hello from claude code\n", usage(800, 40, 300, 0)),
            answer,
        )
        write_agent(tmp_path / "coder", AGENT)
        swarm(home, "agent", "register", str(tmp_path / "coder"), check=True)
        swarm(home, "ticket", "create", "--title", "Greet", "--description", "Write hello.txt",
              "--agent", "coder", check=True)  # fmt: skip
        done = swarm(home, "run-ticket", "1", "--wait", timeout=300,
                     ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=server.url)  # fmt: skip
        reported = server.reported_usage()
        requests = list(server.requests)
        errors = list(server.errors)
    assert done.returncode == 0, done.stdout + done.stderr
    assert errors == [] and len(seen) == 1
    assert {r.api_key for r in requests} == {KEY}
    first = requests[0]
    assert first.path.startswith("/v1/messages") and "Greet" in json.dumps(first.body)
    assert first.headers["user-agent"].startswith("claude-cli/")

    db = home / "tickets.db"
    step = query(db, "SELECT * FROM step_executions")[0]
    outputs = json.loads(step["outputs"])
    assert outputs["result"] == "Wrote hello.txt." and outputs["subtype"] == "success"
    assert outputs["changes"]["added"] == ["hello.txt"]
    for key, value in reported.items():  # recorded tokens are the server's sums...
        assert step[key] == value, key
    assert step["turns"] == 2 and step["stop_reason"] == "end_turn"
    assert outputs["usage_check"]["agree"] is True  # ...and what Claude Code says it used
    assert outputs["claude_code_usage"]["input_tokens"] == reported["input_tokens"]

    artifacts = Path(step["log_path"]).parent
    assert (artifacts / "workspace" / "hello.txt").read_text() == "hello from claude code\n"
    transcript = (artifacts / "transcript.jsonl").read_text().splitlines()
    assert json.loads(transcript[-1])["type"] == "result"
    assert "tool Write" in Path(step["log_path"]).read_text()
    leaks = [p for p in home.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaks == []


def test_a_budget_stops_claude_code_mid_run(claude_code: Path, home: Path, tmp_path: Path) -> None:
    def busy(req: Recorded) -> dict[str, object]:
        block = {"type": "tool_use", "id": f"toolu_{len(req.messages)}", "name": "Bash",
                 "input": {"command": "echo working", "description": "work"}}  # fmt: skip
        return message([block], "tool_use", used=usage(500, 100))

    agent = AGENT.replace("max_tokens: 100000", "max_tokens: 1000").replace(
        "max_turns: 5", "max_turns: 50"
    )
    with MessagesServer(api_key=KEY, fallback=busy) as server:
        write_agent(tmp_path / "coder", agent)
        swarm(home, "agent", "register", str(tmp_path / "coder"), check=True)
        swarm(home, "ticket", "create", "--title", "Loop", "--agent", "coder", check=True)
        done = swarm(home, "run-ticket", "1", "--wait", timeout=300,
                     ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=server.url)  # fmt: skip
        reported = server.reported_usage()
        answered = len(server.message_requests())
    assert done.returncode == 1, done.stdout + done.stderr
    step = query(home / "tickets.db", "SELECT * FROM step_executions")[0]
    assert step["stop_reason"] == "budget_exceeded"
    assert step["error"].startswith(
        "model API budget exceeded: token budget exceeded: 1200 of 1000 tokens used"
    )
    assert answered == 2
    assert step["input_tokens"] == reported["input_tokens"] == 1000
