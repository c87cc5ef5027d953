"""JSON the engine makes by rendering templates, and numbers a store holds that no reader
takes, on each store alike.

A ticket's inputs may nest 64 levels and a definition 64 more, but a step's templates
nest what they name deeper again: the step's inputs would pass the 128 levels every reader
reads back (`records.MAX_READ_DEPTH`). Such a step fails its ticket with one line naming
the step and the limit, before any VM boots for it and without a row the readers refuse.
A number past a double's range fails its ticket alike on SQLite (`1e400`, read as
infinity) and on PostgreSQL (whose `jsonb` stores it as an integer of 401 digits).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_workflow
from tests.conftest import Target
from tests.support.cli import swarm, swarm_inproc

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}
DEEP_LINE = (
    "step 'b' failed: inputs: JSON nested deeper than the 128 levels a step's inputs may have"
)


def _nest(levels: int, inner: str) -> str:
    """The template `inner` (quoted) inside `levels` YAML flow mappings `{k: ...}`."""
    return "{k: " * levels + '"' + inner + '"' + "}" * levels


def _home(target: Target, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    done = swarm_inproc(home, "status", "--init", **target.env)
    assert done.returncode == 0, done.stderr
    return home


def _steps(target: Target, tid: int) -> list[dict[str, object]]:
    return target.rows(
        "SELECT s.step_id, s.status, s.vm_id, s.error FROM step_executions s"
        " JOIN workflow_runs r ON r.id = s.run_id WHERE r.ticket_id = %(t)s ORDER BY s.id",
        t=tid,
    )


def _no_defects(home: Path, target: Target, tid: int) -> None:
    """Every row of the ticket reads back whole: none the engine wrote is refused."""
    shown = swarm_inproc(home, "ticket", "show", str(tid), "--json", **target.env)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert not record.get("defects"), record.get("defects")
    for run in record["runs"]:
        assert not run.get("defects"), run.get("defects")
        for step in run["steps"]:
            assert not step.get("defects"), (step["step_id"], step.get("defects"))


def test_a_step_whose_inputs_render_too_deep_fails_in_one_line_before_its_vm(
    store_target: Target, tmp_path: Path
) -> None:
    home = _home(store_target, tmp_path)
    # 57 levels of mappings around a ticket input of 61 (the CLI takes 64): a's inputs nest
    # 118 levels; b nests those outputs 57 levels deeper again
    write_workflow(
        tmp_path / "deep",
        "name: deep\nversion: 1.0.0\nsteps:\n"
        f"  - id: a\n    agent: echo\n    inputs: {{v: {_nest(55, '${inputs.x}')}}}\n"
        f"  - id: b\n    agent: echo\n    inputs: {{d: {_nest(55, '${steps.a.outputs.v}')}}}\n",
    )
    env = store_target.env
    assert swarm_inproc(home, "workflow", "register", str(tmp_path / "deep"), **env).returncode == 0
    x = "[" * 60 + "]" * 60
    made = swarm_inproc(
        home,
        "ticket",
        "create",
        "--title",
        "deep",
        "--workflow",
        "deep",
        "--input",
        f"x={x}",
        **env,
    )
    assert made.returncode == 0, made.stderr
    tid = int(made.stdout.split()[1])
    done = swarm(home, "run-ticket", str(tid), "--wait", timeout=120, **env, **FAST)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in out and "internal error" not in out, out
    assert out.strip().splitlines()[-1] == f"error: ticket {tid} failed: {DEEP_LINE}", out
    (ticket,) = store_target.rows("SELECT status, error FROM tickets WHERE id = %(t)s", t=tid)
    assert ticket == {"status": "failed", "error": DEEP_LINE}
    a, b = _steps(store_target, tid)
    assert a["status"] == "done" and a["vm_id"] is not None
    assert b["status"] == "failed" and b["vm_id"] is None  # no VM booted for it
    assert len(store_target.rows("SELECT id FROM vms")) == 1  # step a's only
    _no_defects(home, store_target, tid)


def test_a_step_over_an_outside_writers_deep_inputs_fails_before_its_vm(
    store_target: Target, tmp_path: Path
) -> None:
    """The ticket row written by another client, its inputs nested 100 levels (the
    readers take up to 128): the step nesting them 57 levels deeper fails alone, and the
    engine and the other ticket go on."""
    home = _home(store_target, tmp_path)
    write_workflow(
        tmp_path / "wrap",
        "name: wrap\nversion: 1.0.0\nsteps:\n"
        f"  - id: b\n    agent: echo\n    inputs: {{val: '${{inputs.x}}', deep: {_nest(56, '${inputs.x}')}}}\n",
    )
    env = store_target.env
    assert swarm_inproc(home, "workflow", "register", str(tmp_path / "wrap"), **env).returncode == 0
    deep = json.dumps({"x": json.loads("[" * 99 + "]" * 99)})
    store_target.sql(
        "INSERT INTO tickets (title, status, execution_mode, workflow_id, inputs) VALUES"
        f" ('deep', 'open', 'workflow', 'wrap', '{deep}'),"
        " ('fine', 'open', 'workflow', 'wrap', '{\"x\": 1}')"
    )
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=120, **env, **FAST)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in out and "internal error" not in out, out
    rows = store_target.rows("SELECT id, status, error FROM tickets ORDER BY id")
    assert [(r["status"], r["error"]) for r in rows] == [("failed", DEEP_LINE), ("done", None)]
    (step,) = _steps(store_target, rows[0]["id"])
    assert step["status"] == "failed" and step["vm_id"] is None
    for row in rows:
        _no_defects(home, store_target, row["id"])


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1" + "0" * 400])
def test_a_number_past_a_doubles_range_fails_its_ticket_on_every_store(
    store_target: Target, tmp_path: Path, number: str
) -> None:
    home = _home(store_target, tmp_path)
    store_target.sql(
        "INSERT INTO tickets (title, status, agent_id, inputs) VALUES"
        f" ('big', 'open', 'echo', '{{\"s\": {number}}}'), ('fine', 'open', 'echo', '{{\"s\": 1}}')"
    )
    done = swarm(
        home, "start", "--foreground", "--until-idle", timeout=120, **store_target.env, **FAST
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in out, out
    big, fine = store_target.rows("SELECT status, error, result FROM tickets ORDER BY id")
    assert big["status"] == "failed", big
    error = str(big["error"])
    assert "inputs: not valid JSON (number " in error and "is out of range)" in error, error
    assert "\n" not in error
    assert fine["status"] == "done"
    # the shared reader names it the same way wherever it is read
    shown = swarm_inproc(home, "ticket", "show", "1", "--json", **store_target.env)
    assert shown.returncode == 0, shown.stderr
    assert any("is out of range" in d for d in json.loads(shown.stdout)["defects"])


def test_the_cli_refuses_an_integer_past_a_doubles_range(home: Path) -> None:
    """As it refuses `1e400` (`--input`, which takes what is not JSON as text, keeps both
    as text)."""
    for number in ("1e400", "-1" + "0" * 400):
        out = swarm_inproc(
            home, "ticket", "create", "--title", "t", "--agent", "echo",
            "--inputs-json", f'{{"s": {number}}}',
        )  # fmt: skip
        assert out.returncode == 2, (out.stdout, out.stderr)
        assert "is out of range" in out.stderr and out.stderr.count("\n") == 1, out.stderr
