"""The Claude agent through the whole engine: `run-ticket --wait` as a real process, the real
SDK against a local Messages API server, tools acting in the step's sandbox. Then the key is
searched for everywhere the engine writes: it must be nowhere."""

from __future__ import annotations

import json
from pathlib import Path

from tests.acceptance.conftest import write_agent
from tests.support.cli import query, snapshot, swarm
from tests.support.messages_server import MessagesServer, Recorded, text, tool_use, usage

KEY = "sk-ant-api03-acceptance-KEY-0000SECRET9999"
AGENT = """
name: coder
kind: claude
config:
  model: claude-sonnet-4-6
  max_turns: 6
  retry: {max_retries: 2, backoff_seconds: 0.001, max_backoff_seconds: 0.01}
output_files: [notes.txt]
"""


def test_a_claude_ticket_runs_in_its_vm_and_records_usage(home: Path, tmp_path: Path) -> None:
    seen: dict[str, Recorded] = {}

    def after_write(req: Recorded) -> dict[str, object]:
        seen["write"] = req
        return tool_use(
            ("bash", {"command": "cat notes.txt; env | sort"}), used=usage(210, 25, 0, 90)
        )

    def after_bash(req: Recorded) -> dict[str, object]:
        seen["bash"] = req
        return text("Wrote notes.txt with the plan.", used=usage(330, 14, 0, 120))

    with MessagesServer(api_key=KEY) as server:
        server.push(
            tool_use(("write_file", {"path": "notes.txt", "content": "step 1: read the ticket\n"}),
                     used=usage(150, 40, 60, 0)),
            after_write,
            after_bash,
        )  # fmt: skip
        write_agent(tmp_path / "coder", AGENT)
        swarm(home, "agent", "register", str(tmp_path / "coder"), check=True)
        swarm(home, "ticket", "create", "--title", "Plan", "--description", "Write a plan to notes.txt",
              "--agent", "coder", check=True)  # fmt: skip
        env = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
        done = swarm(home, "run-ticket", "1", "--wait", **env)
        reported = server.reported_usage()
        assert server.errors == []
    assert done.returncode == 0, done.stdout + done.stderr
    assert "in 690 / out 79 tokens" in done.stdout  # usage in the --wait summary

    # the command ran in the VM: its real output went back to the model, without the key
    bash_result = seen["bash"].tool_results()[0]["content"]
    assert bash_result.startswith("step 1: read the ticket\n")
    assert "SWARM_VM_ID=vm-" in bash_result and KEY not in bash_result
    assert "ANTHROPIC" not in bash_result

    db = home / "tickets.db"
    ticket = query(db, "SELECT * FROM tickets")[0]
    assert ticket["status"] == "done"
    result = json.loads(ticket["result"])
    assert result["answer"] == "Wrote notes.txt with the plan."
    assert result["files"] == {"notes.txt": "step 1: read the ticket\n"}
    step = query(db, "SELECT * FROM step_executions")[0]
    run = query(db, "SELECT * FROM workflow_runs")[0]
    for key, value in reported.items():
        assert step[key] == value and run[key] == value, key
    assert step["turns"] == 3 and step["stop_reason"] == "end_turn"
    assert step["cost_usd"] > 0 and run["cost_usd"] == step["cost_usd"]
    transcript = Path(step["log_path"]).parent / "transcript.json"
    assert transcript.is_file()

    shown = swarm(home, "ticket", "show", "1", check=True).stdout
    assert "690" in shown or "in 690" in shown
    status = swarm(home, "status", "--json", check=True)
    assert json.loads(status.stdout)["usage"]["input_tokens"] == 690

    # the key is nowhere: not in either database (WAL included), not in any file under home
    leaks = [p for p in home.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaks == []


def test_a_missing_key_is_one_line_before_any_vm_boots(home: Path, tmp_path: Path) -> None:
    write_agent(tmp_path / "coder", AGENT)
    swarm(home, "agent", "register", str(tmp_path / "coder"), check=True)
    swarm(home, "ticket", "create", "--title", "Plan", "--agent", "coder", check=True)
    before = snapshot(home / "tickets.db")
    done = swarm(home, "run-ticket", "1", "--wait")
    assert done.returncode == 8, done.stdout + done.stderr
    assert (
        done.stderr.startswith("error: ANTHROPIC_API_KEY is not set")
        and done.stderr.count("\n") == 1
    )
    assert snapshot(home / "tickets.db") == before
    assert query(home / "tickets.db", "SELECT count(*) AS n FROM vms")[0]["n"] == 0
