"""A step that prints 200 MB, seen through the CLI (issue 8, item 5).

What a user relies on: the start and the end of the output (where the errors are) with an
explicit `[... N bytes cut ...]` line and the true byte count; the result stored once (the
step row and the ticket, not again in the run row), so tickets.db stays small; the step log
file capped at `max_log_bytes`; every command still showing the result.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

from tests.acceptance.conftest import write_agent, write_workflow
from tests.support.cli import query, swarm

CUT = re.compile(r"\n\[\.\.\. (\d+) bytes cut \.\.\.\]\n")
SIZE = 200_000_000
LOG_LIMIT = 1024 * 1024


def db_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in home.glob("tickets.db*"))


def test_200_mb_of_stdout_keeps_both_ends_and_the_store_stays_small(
    home: Path, tmp_path: Path
) -> None:
    (home / "config.toml").write_text(f"max_log_bytes = {LOG_LIMIT}\n")
    write_agent(
        tmp_path / "bigout",
        f"""\
        name: bigout
        version: 1.0.0
        kind: shell
        command: "echo first-line; head -c {SIZE} /dev/zero | tr '\\\\0' x; echo; echo tail-marker"
        timeout_seconds: 120
        """,
    )
    swarm(home, "agent", "register", str(tmp_path / "bigout"), check=True)
    swarm(home, "ticket", "create", "--title", "big", "--agent", "bigout", check=True)
    before = db_bytes(home)

    done = swarm(home, "run-ticket", "1", "--wait", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ticket 1 done" in done.stdout
    summary = " ".join(done.stdout.split())
    assert "bytes cut ...]" in summary and "tail-marker" in summary
    assert "Traceback" not in done.stdout + done.stderr

    total = len("first-line\n") + SIZE + len("\ntail-marker\n")
    ticket = query(home / "tickets.db", "SELECT * FROM tickets WHERE id = 1")[0]
    result = json.loads(ticket["result"])
    assert result["stdout_bytes"] == total
    assert result["stdout"].startswith("first-line\nxxx")
    assert result["stdout"].endswith("xxx\ntail-marker\n")
    found = CUT.search(result["stdout"])
    assert found is not None
    kept = len(result["stdout"].encode()) - len(found.group(0))
    assert int(found.group(1)) == total - kept
    assert kept == 2 * 64 * 1024  # the default: 64 KiB of the head and of the tail

    # stored once: the step row and the ticket's result; the run row does not repeat it
    run = query(home / "tickets.db", "SELECT * FROM workflow_runs")[0]
    step = query(home / "tickets.db", "SELECT * FROM step_executions")[0]
    assert run["status"] == "done" and run["outputs"] is None
    assert json.loads(step["outputs"]) == result
    # the outputs once (< 1 MiB), and the live copy of the step log, capped like the file
    assert db_bytes(home) - before < LOG_LIMIT + 1024 * 1024  # was ~50 MB

    log = Path(step["log_path"]).read_bytes()
    assert len(log) <= LOG_LIMIT
    assert log.startswith(b"first-line\nxxx")
    assert log.endswith(b"tail-marker\n")
    assert re.search(rb"\n\[\.\.\. \d+ bytes cut \.\.\.\]\n", log)

    shown = swarm(home, "ticket", "show", "1")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"\[\.\.\. \d+ bytes cut", shown.stdout) and "tail-marker" in shown.stdout
    as_json = json.loads(swarm(home, "ticket", "show", "1", "--json", check=True).stdout)
    assert as_json["result"] == result
    logs = swarm(home, "logs", "1")
    assert logs.returncode == 0 and logs.stdout.rstrip().endswith("tail-marker")
    status = swarm(home, "status")
    assert status.returncode == 0 and "Traceback" not in status.stdout + status.stderr


def test_a_failing_step_that_prints_a_lot_still_reports_its_last_words(
    home: Path, tmp_path: Path
) -> None:
    write_agent(
        tmp_path / "noisy",
        """\
        name: noisy
        version: 1.0.0
        kind: shell
        command: "head -c 20000000 /dev/zero | tr '\\\\0' y >&2; echo >&2; echo 'fatal: disk on fire' >&2; exit 2"
        timeout_seconds: 60
        """,
    )
    swarm(home, "agent", "register", str(tmp_path / "noisy"), check=True)
    swarm(home, "ticket", "create", "--title", "noisy", "--agent", "noisy", check=True)
    done = swarm(home, "run-ticket", "1", "--wait")
    assert done.returncode == 1
    ticket = query(home / "tickets.db", "SELECT status, error FROM tickets WHERE id = 1")[0]
    assert ticket["status"] == "failed"
    assert "command exited with 2" in ticket["error"] and "fatal: disk on fire" in ticket["error"]
    step = query(home / "tickets.db", "SELECT outputs FROM step_executions")[0]
    outputs = json.loads(step["outputs"])
    assert outputs["stderr_bytes"] == 20_000_000 + len("\nfatal: disk on fire\n")
    assert "stdout_bytes" not in outputs  # stdout was short: whole, no count needed


def test_a_workflow_result_is_stored_once(home: Path, tmp_path: Path) -> None:
    """Leaf outputs by step id are not copied into the run row; an `outputs:` mapping is."""
    write_agent(
        tmp_path / "say",
        """\
        name: say
        version: 1.0.0
        kind: shell
        command: "echo ${inputs.word}"
        """,
    )
    swarm(home, "agent", "register", str(tmp_path / "say"), check=True)
    for name, extra in (
        ("leaves", ""),
        ("mapped", "outputs:\n  said: ${steps.b.outputs.stdout}\n"),
    ):
        write_workflow(
            tmp_path / name,
            f"name: {name}\nversion: 1.0.0\nsteps:\n"
            "  - id: a\n    agent: say\n    inputs: {word: one}\n"
            "  - id: b\n    agent: say\n    needs: [a]\n    inputs: {word: two}\n" + extra,
        )
        swarm(home, "workflow", "register", str(tmp_path / name), check=True)
        swarm(home, "ticket", "create", "--title", name, "--workflow", name, check=True)
    for ticket_id in ("1", "2"):
        done = swarm(home, "run-ticket", ticket_id, "--wait")
        assert done.returncode == 0, done.stdout + done.stderr
    db = home / "tickets.db"
    results = {
        r["id"]: json.loads(r["result"]) for r in query(db, "SELECT id, result FROM tickets")
    }
    runs = {r["ticket_id"]: r["outputs"] for r in query(db, "SELECT * FROM workflow_runs")}
    assert results[1] == {"b": {"stdout": "two\n", "stderr": "", "exit_code": 0}}
    assert runs[1] is None  # the leaf step's row holds it
    assert results[2] == {"said": "two\n"}
    assert json.loads(runs[2]) == results[2]  # computed by the workflow: kept with its run


def test_echo_returns_large_inputs_whole(home: Path) -> None:
    """The echo agent's round trip is not cut by the output bound (it reads a file back)."""
    inputs = {"doc": "é" * 600_000, "n": 1}  # 1.2 MB of UTF-8, well over the 128 KiB kept
    conn = sqlite3.connect(home / "tickets.db", timeout=30)
    with conn:
        conn.execute(
            "INSERT INTO tickets (title, status, agent_id, inputs) VALUES ('big', 'open', 'echo', ?)",
            (json.dumps(inputs),),
        )
    conn.close()
    done = swarm(home, "run-ticket", "1", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == inputs
