"""A step that prints or outputs NUL (`find -print0`, `tr '\\n' '\\0'`) runs alike on both
stores: each NUL the engine stores from a step (its live log, its outputs' strings and
keys, the ticket's result, its error) is stored as U+FFFD; the step's `output.log` keeps
the raw bytes. PostgreSQL cannot hold a NUL in text or jsonb: before, such a ticket failed
there with the database's own words, and was done on SQLite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.acceptance.conftest import write_agent, write_workflow
from tests.conftest import Target
from tests.support.cli import swarm_inproc

EMIT = """\
import json, os, sys
sys.stdout.write("a\\0b\\n")
sys.stdout.flush()
sys.stderr.write("warn\\0ing\\n")
json.dump({"val": "x\\0y", "k\\0ey": ["\\0"], "plain": "\\\\u0000"},
          open(os.environ["SWARM_OUTPUTS"], "w"))
"""


@pytest.fixture
def home(store_target: Target, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", **store_target.env).returncode == 0
    return home


def cli(home: Path, target: Target, *args: str) -> str:
    done = swarm_inproc(home, *args, **target.env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def as_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def step_rows(target: Target, tid: int) -> list[dict[str, Any]]:
    return target.rows(
        "SELECT s.id, s.step_id, s.status, s.outputs, s.inputs, s.log_path, s.error"
        " FROM step_executions s JOIN workflow_runs r ON r.id = s.run_id"
        " WHERE r.ticket_id = %(t)s ORDER BY s.id",
        t=tid,
    )


def logged(target: Target, exec_id: int) -> str:
    rows = target.rows(
        "SELECT data FROM step_logs WHERE step_execution_id = %(e)s ORDER BY id", e=exec_id
    )
    return "".join(str(r["data"]) for r in rows)


def test_a_command_printing_nul_is_done_with_its_nul_stored_as_fffd(
    home: Path, store_target: Target
) -> None:
    cli(home, store_target, "ticket", "create", "--title", "print0", "--agent", "shell",
        "--input", "command=printf 'a\\0b\\n'; printf 'c\\0d' >&2")  # fmt: skip
    out = cli(home, store_target, "run-ticket", "1", "--wait")
    assert "ticket 1 done" in out, out
    (ticket,) = store_target.rows("SELECT status, error, result FROM tickets")
    assert (ticket["status"], ticket["error"]) == ("done", None)
    (step,) = step_rows(store_target, 1)
    outputs = as_json(step["outputs"])
    assert outputs["stdout"] == "a\ufffdb\n" and outputs["stderr"] == "c\ufffdd"
    assert "a\ufffdb" in logged(store_target, step["id"])
    assert "\x00" not in json.dumps(as_json(ticket["result"]), ensure_ascii=False)
    assert b"a\x00b" in Path(step["log_path"]).read_bytes()  # the file keeps the bytes


def test_a_workflow_step_outputting_nul_passes_it_on_as_fffd(
    home: Path, store_target: Target, tmp_path: Path
) -> None:
    write_agent(tmp_path / "emit", """\
        name: emit
        kind: shell
        command: python3 emit.py
        """, {"emit.py": EMIT})  # fmt: skip
    write_workflow(tmp_path / "wf", """\
        name: nul
        version: 1.0.0
        steps:
          - id: a
            agent: emit
          - id: b
            agent: echo
            inputs: {msg: "pre ${steps.a.outputs.val} post"}
        outputs:
          val: "${steps.a.outputs.val}"
          b: "${steps.b.outputs.msg}"
        """)  # fmt: skip
    cli(home, store_target, "agent", "register", str(tmp_path / "emit"))
    cli(home, store_target, "workflow", "register", str(tmp_path / "wf"))
    cli(home, store_target, "ticket", "create", "--title", "nul", "--workflow", "nul")
    out = cli(home, store_target, "run-ticket", "1", "--wait")
    assert "ticket 1 done" in out, out
    (ticket,) = store_target.rows("SELECT status, error, result FROM tickets")
    assert (ticket["status"], ticket["error"]) == ("done", None)
    assert as_json(ticket["result"]) == {"val": "x\ufffdy", "b": "pre x\ufffdy post"}
    a, b = step_rows(store_target, 1)
    outputs = as_json(a["outputs"])
    assert outputs["stdout"] == "a\ufffdb\n" and outputs["stderr"] == "warn\ufffding\n"
    assert {k: v for k, v in outputs.items() if k not in ("stdout", "stderr", "exit_code")} == {
        "val": "x\ufffdy",
        "k\ufffdey": ["\ufffd"],
        "plain": "\\u0000",  # (a backslash and `u0000`, no NUL: kept)
    }
    assert as_json(b["inputs"]) == {"msg": "pre x\ufffdy post"}
    text = logged(store_target, a["id"])
    assert "a\ufffdb" in text and "warn\ufffding" in text and "\x00" not in text
    assert b"a\x00b" in Path(a["log_path"]).read_bytes()
