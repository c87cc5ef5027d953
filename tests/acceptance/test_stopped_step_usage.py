"""A step stopped from outside (its ticket's timeout, a cancel, the engine's `stop --now`)
keeps the usage it was billed: its `cancelled` row holds the tokens the model API answered
with so far, and its run's sums include them (docs/claude.md, "Usage and cost"). Both ways
a step meets the API: the built-in `claude` agent (usage counted by the agent) and a
command behind the step's gateway (usage counted by the gateway's meter)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tests.acceptance.conftest import engine_ready, write_agent
from tests.support.cli import query, start_engine, swarm, swarm_inproc, wait_until
from tests.support.messages_server import MessagesServer, Reply, text, tool_use, usage

KEY = "sk-ant-api03-stopped-usage-KEY-0000SECRET9999"
FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.3"}
CLAUDE = """
name: looper
kind: claude
timeout_seconds: 300
config:
  model: claude-sonnet-4-6
  max_turns: 100
"""
# a command behind the gateway: asks, works 1 s, asks again, then works a minute (the
# standard library only)
CALLS = """
import json, os, time, urllib.request

for pause in (1, 60):
    body = json.dumps({"model": "claude-sonnet-4-6", "max_tokens": 50,
                       "messages": [{"role": "user", "content": "more"}]}).encode()
    request = urllib.request.Request(
        os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages", data=body, method="POST",
        headers={"x-api-key": os.environ["ANTHROPIC_API_KEY"],
                 "content-type": "application/json", "anthropic-version": "2023-06-01"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        answer.read()
    time.sleep(pause)
"""
SCRIPT = """
name: looper
kind: shell
model_api: true
timeout_seconds: 300
command: python3 calls.py
"""
TOKENS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def work(seconds: int, n: int) -> dict[str, object]:
    """An answer that asks for a command working `seconds`."""
    return tool_use(("bash", {"command": f"sleep {seconds}"}), used=usage(100 + n, 7, 30, 11))


def setup(
    home: Path, tmp_path: Path, server: MessagesServer, kind: str, *ticket: str, script: bool = True
) -> None:
    """Ticket 1 of agent `looper`: two answers (`script`), then a minute's work, stopped
    meanwhile."""
    if script:
        server.push(work(1, 1), work(60, 2))
    files = {"calls.py": CALLS} if kind == "script" else None
    write_agent(tmp_path / "looper", SCRIPT if kind == "script" else CLAUDE, files)
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "looper")).returncode == 0
    made = swarm_inproc(home, "ticket", "create", "--title", "loop", "--agent", "looper", *ticket)
    assert made.returncode == 0, made.stderr


def counted(home: Path, n: int) -> bool:
    """Whether the step has said it counted `n` answers (its live log in the store)."""
    rows = query(home / "tickets.db", "SELECT data FROM step_logs")
    said = "".join(r["data"] for r in rows)
    return said.count("turn ") + said.count("model API: claude-sonnet-4-6 in=") >= n


def assert_recorded(home: Path, server: MessagesServer, status: str) -> dict[str, object]:
    reported = server.reported_usage()
    assert server.errors == []
    assert reported["input_tokens"] > 0
    db = home / "tickets.db"
    (step,) = query(db, "SELECT * FROM step_executions")
    (run,) = query(db, "SELECT * FROM workflow_runs")
    assert step["status"] == status, step
    for key in TOKENS:  # the step's row and its run's sums: what the server answered
        assert step[key] == reported[key] and run[key] == reported[key], (key, step, run)
    assert step["turns"] == sum(1 for code, _ in server.replies if code == 200) == 2
    assert step["cost_usd"] > 0 and run["cost_usd"] == pytest.approx(step["cost_usd"])
    return step


@pytest.mark.parametrize("kind", ["claude", "script"])
def test_a_ticket_timeout_keeps_the_usage_of_its_cancelled_step(
    home: Path, tmp_path: Path, kind: str
) -> None:
    with MessagesServer(api_key=KEY) as server:
        setup(home, tmp_path, server, kind, "--timeout", "4")
        done = swarm(home, "run-ticket", "1", "--wait",
                     ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=server.url)  # fmt: skip
        assert done.returncode == 1, done.stdout + done.stderr
        assert "ticket timed out after 4s" in done.stdout + done.stderr
        assert_recorded(home, server, "cancelled")


@pytest.mark.parametrize("kind", ["claude", "script"])
@pytest.mark.parametrize("how", ["cancel", "stop --now"])
def test_a_cancel_or_an_abort_keeps_the_usage_of_its_cancelled_step(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]], kind: str, how: str
) -> None:
    env = {"ANTHROPIC_API_KEY": KEY, **FAST}
    with MessagesServer(api_key=KEY) as server:
        setup(home, tmp_path, server, kind)
        proc = start_engine(home, ANTHROPIC_BASE_URL=server.url, **env)
        engines.append(proc)
        engine_ready(home, proc)
        # two answers counted: the step works a minute on the second when it is stopped
        wait_until(lambda: counted(home, 2), 60, "two answers counted")
        command = ["ticket", "cancel", "1"] if how == "cancel" else ["stop", "--now"]
        stopped = swarm_inproc(home, *command)
        assert stopped.returncode == 0, stopped.stderr
        if how == "cancel":
            db = home / "tickets.db"
            sql = "SELECT status FROM workflow_runs"
            wait_until(lambda: query(db, sql)[0]["status"] != "running", 60, "the run's end")
        else:
            proc.communicate(timeout=60)
        step = assert_recorded(home, server, "cancelled")
    assert step["error"] == "cancelled"
    (run,) = query(home / "tickets.db", "SELECT * FROM workflow_runs")
    assert run["status"] == ("cancelled" if how == "cancel" else "failed"), run


@pytest.mark.parametrize(
    ("slow", "status"),
    [
        (Reply(body=text("late", used=usage(999, 999)), delay=30), None),
        (Reply(body=text("late", used=usage(999, 999)), drip=0.5), 200),
    ],
    ids=["before its head", "mid-body"],
)
def test_a_request_the_steps_end_cut_off_is_said_so_and_counted_as_far_as_answered(
    home: Path, tmp_path: Path, slow: Reply, status: int | None
) -> None:
    """The ticket's timeout comes while the gateway waits for an answer (the endpoint
    takes 30 s to answer, or drips its body in): that request is `cut_off` (only: tester
    h-210 found one cut mid-body listed `usage not readable` and counted `unmetered` as
    well) in model_api.json, its record says so, and the step's usage is that of the
    answers the gateway had read."""
    with MessagesServer(api_key=KEY, fallback=slow) as server:
        server.push(text("first", used=usage(120, 30, 40, 10)))
        setup(home, tmp_path, server, "script", "--timeout", "4", script=False)
        done = swarm(home, "run-ticket", "1", "--wait",
                     ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=server.url)  # fmt: skip
        assert done.returncode == 1, done.stdout + done.stderr
        assert len(server.message_requests()) == 2
    (step,) = query(home / "tickets.db", "SELECT * FROM step_executions")
    assert step["status"] == "cancelled"
    assert [step[k] for k in TOKENS] == [120, 30, 40, 10] and step["turns"] == 1
    record = json.loads((Path(step["log_path"]).parent / "model_api.json").read_text())
    assert (record["requests"], record["cut_off"], record["unmetered"]) == (2, 1, 0), record
    assert record["usage"]["input_tokens"] == 120
    late = record["requests_log"][-1]
    assert late.get("status") == status and late["error"].startswith("cut off"), late
