"""What the engine writes stays within what its own readers read (a tester's findings).

Templates multiply: a step whose ten inputs all name one large ticket input, an echo step
whose outputs are its inputs, three steps whose legal outputs add up to a result no reader
opens. Each is refused where it is made, with one line naming the size and the cap, and
no row over its cap is stored. And a command's `$SWARM_OUTPUTS` cannot overwrite the
`stdout`, `stderr` and `exit_code` the engine fills itself.

Every engine here is the real command, on the real store.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

from tests.acceptance.conftest import write_agent, write_workflow
from tests.support.cli import query, swarm

MIB = 1024 * 1024
CAP = 8 * MIB  # what every reader of a step's, a run's or a ticket's JSON reads at most


def add_ticket(home: Path, inputs: dict[str, Any], *, workflow: str = "", agent: str = "") -> None:
    """A ticket inserted as any client may (its inputs within their 8 MiB)."""
    mode = "workflow" if workflow else "single"
    conn = sqlite3.connect(home / "tickets.db", timeout=30)
    with conn:
        conn.execute(
            "INSERT INTO tickets (title, status, execution_mode, workflow_id, agent_id, inputs)"
            " VALUES ('big', 'open', ?, ?, ?, ?)",
            (mode, workflow or None, agent or None, json.dumps(inputs)),
        )
    conn.close()


def run_until_idle(home: Path) -> str:
    done = swarm(home, "start", "--foreground", "--until-idle", "--max-vms", "2", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    return done.stdout + done.stderr


def largest_rows(home: Path) -> dict[str, int]:
    """The longest JSON the store holds in each column the engine writes."""
    db = home / "tickets.db"
    sizes = {}
    for table, column in (
        ("step_executions", "inputs"),
        ("step_executions", "outputs"),
        ("workflow_runs", "inputs"),
        ("workflow_runs", "outputs"),
        ("tickets", "result"),
    ):
        row = query(db, f"SELECT max(length(CAST({column} AS BLOB))) AS n FROM {table}")[0]
        sizes[f"{table}.{column}"] = int(row["n"] or 0)
    return sizes


def ticket(home: Path) -> dict[str, Any]:
    return query(home / "tickets.db", "SELECT status, error, result FROM tickets WHERE id = 1")[0]


def test_inputs_a_template_multiplies_past_the_cap_fail_the_step(
    home: Path, tmp_path: Path
) -> None:
    """Ten inputs naming one 1 MiB ticket input: 10 MiB of rendered inputs, never written,
    sent into a VM, echoed back or combined into a result."""
    refs = ", ".join(f'v{i}: "${{inputs.x}}"' for i in range(10))
    write_workflow(
        tmp_path / "inmult",
        f"name: inmult\nversion: 1.0.0\nsteps:\n  - id: e\n    agent: echo\n    inputs: {{{refs}}}\n",
    )
    swarm(home, "workflow", "register", str(tmp_path / "inmult"), check=True)
    add_ticket(home, {"x": "z" * MIB}, workflow="inmult")

    run_until_idle(home)

    row = ticket(home)
    assert row["status"] == "failed" and row["result"] is None
    size = len(json.dumps({f"v{i}": "z" * MIB for i in range(10)}))
    assert row["error"] == (
        f"step 'e' failed: inputs: {size:,} bytes of JSON, more than the 8 MiB a step's"
        " inputs may hold"
    )
    step = query(home / "tickets.db", "SELECT status, inputs, vm_id FROM step_executions")
    assert [(s["status"], s["inputs"], s["vm_id"]) for s in step] == [("failed", "{}", None)]
    assert max(largest_rows(home).values()) <= CAP


def test_text_a_template_builds_past_the_cap_fails_the_step(home: Path, tmp_path: Path) -> None:
    """One 1 MiB input named nine times inside one text input: refused before it is built."""
    text = " ".join(["${inputs.x}"] * 9)
    write_workflow(
        tmp_path / "intext",
        f"name: intext\nversion: 1.0.0\nsteps:\n  - id: e\n    agent: echo\n"
        f"    inputs: {{v: '{text}'}}\n",
    )
    swarm(home, "workflow", "register", str(tmp_path / "intext"), check=True)
    add_ticket(home, {"x": "z" * MIB}, workflow="intext")

    run_until_idle(home)

    row = ticket(home)
    assert row["status"] == "failed" and row["result"] is None
    assert row["error"] == (
        "step 'e' failed: inputs: the text its references build is more than 8,388,608 characters"
    )
    assert max(largest_rows(home).values()) <= CAP


def test_outputs_over_4_mib_fail_the_step_and_are_not_stored(home: Path) -> None:
    """An echo ticket with 5 MiB of inputs (legal) would make 5 MiB of outputs."""
    add_ticket(home, {"doc": "y" * (5 * MIB)}, agent="echo")

    run_until_idle(home)

    row = ticket(home)
    assert row["status"] == "failed" and row["result"] is None
    found = re.fullmatch(
        r"step 'main' failed: outputs: ([\d,]+) bytes of JSON, more than the 4 MiB a step's"
        r" outputs may hold \(not stored\)",
        row["error"],
    )
    assert found is not None, row["error"]
    assert int(found[1].replace(",", "")) == len(json.dumps({"doc": "y" * (5 * MIB)}))
    step = query(home / "tickets.db", "SELECT status, outputs, error FROM step_executions")[0]
    assert step["status"] == "failed" and step["outputs"] is None
    assert largest_rows(home)["step_executions.outputs"] == 0


def test_a_result_of_legal_outputs_over_8_mib_fails_the_ticket(home: Path, tmp_path: Path) -> None:
    """Three leaf steps, each writing 3 MiB of outputs (within their 4 MiB): combined by
    step id they would be 9 MiB, a result no reader opens."""
    write_agent(
        tmp_path / "three",
        """\
        name: three
        version: 1.0.0
        kind: shell
        command: >-
          printf '{"blob": "' > "$SWARM_OUTPUTS";
          head -c 3145728 /dev/zero | tr '\\000' q >> "$SWARM_OUTPUTS";
          printf '"}' >> "$SWARM_OUTPUTS"
        """,
    )
    swarm(home, "agent", "register", str(tmp_path / "three"), check=True)
    steps = "".join(f"  - id: s{i}\n    agent: three\n" for i in range(3))
    write_workflow(tmp_path / "wide", f"name: wide\nversion: 1.0.0\nsteps:\n{steps}")
    swarm(home, "workflow", "register", str(tmp_path / "wide"), check=True)
    add_ticket(home, {}, workflow="wide")

    run_until_idle(home)

    row = ticket(home)
    assert row["status"] == "failed" and row["result"] is None
    one = {"stdout": "", "stderr": "", "exit_code": 0, "blob": "q" * 3145728}
    size = len(json.dumps({f"s{i}": one for i in range(3)}))
    assert row["error"] == (
        f"result: {size:,} bytes of JSON, more than the 8 MiB a ticket's result may hold"
        " (not stored)"
    )
    steps_done = query(home / "tickets.db", "SELECT status FROM step_executions")
    assert [s["status"] for s in steps_done] == ["done"] * 3  # each step's own is kept
    assert max(largest_rows(home).values()) <= CAP


def test_an_outputs_file_cannot_overwrite_the_engines_own_keys(home: Path, tmp_path: Path) -> None:
    """`stdout` and `exit_code` written to $SWARM_OUTPUTS: the step fails, saying so; the
    next step never sees the forged exit code."""
    write_agent(
        tmp_path / "forge",
        """\
        name: forge
        version: 1.0.0
        kind: shell
        command: >-
          echo real-out; printf '{"stdout": "FAKE", "exit_code": 99, "note": "mine"}'
          > "$SWARM_OUTPUTS"
        """,
    )
    swarm(home, "agent", "register", str(tmp_path / "forge"), check=True)
    write_workflow(
        tmp_path / "chain",
        """\
        name: chain
        version: 1.0.0
        steps:
          - id: gen
            agent: forge
          - id: use
            agent: echo
            inputs: {code: "${steps.gen.outputs.exit_code}"}
        """,
    )
    swarm(home, "workflow", "register", str(tmp_path / "chain"), check=True)
    swarm(home, "ticket", "create", "--title", "forged", "--workflow", "chain", check=True)

    done = swarm(home, "run-ticket", "1", "--wait")

    assert done.returncode == 1, done.stdout + done.stderr
    row = ticket(home)
    assert row["status"] == "failed"
    assert row["error"] == (
        "step 'gen' failed: $SWARM_OUTPUTS sets stdout, exit_code: keys the engine fills"
        " itself (stdout, stderr, exit_code, stdout_bytes, stderr_bytes); write them under"
        " other names"
    )
    rows = query(
        home / "tickets.db", "SELECT step_id, status, exit_code, outputs FROM step_executions"
    )
    by_id = {r["step_id"]: r for r in rows}
    assert by_id["use"]["status"] == "skipped"
    gen = by_id["gen"]
    assert gen["status"] == "failed" and gen["exit_code"] == 0
    assert json.loads(gen["outputs"]) == {"stdout": "real-out\n", "stderr": "", "exit_code": 0}
