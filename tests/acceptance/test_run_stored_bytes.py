"""What one run stores in its steps' rows is bounded in all, not only row by row (a
tester's finding): a ticket's 3 MiB of inputs named by each of a workflow's 100 steps made
`tickets.db` grow by 311 MB. Each step row's inputs and outputs, and each step's live log,
count against the run's `max_run_stored_bytes`; the step that would pass it fails, with
one line naming the setting, and its value is never written. Both stores, the real engine
command.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.acceptance.conftest import write_agent, write_workflow
from tests.conftest import Target
from tests.support.cli import swarm, swarm_inproc

MIB = 1024 * 1024
BIG = 200 * 1024  # characters of a ticket input each step names
OVER = re.compile(
    r"step 's\d+' failed: (inputs: [\d,]+ bytes of JSON|outputs: [\d,]+ bytes of JSON"
    r"|log of step 's\d+': [\d,]+ bytes) would bring the run's stored"
    r" step values to ([\d,]+) bytes, more than the 1 MiB a run may store \(setting"
    r" max_run_stored_bytes\)"
)
"""The run's end at the limit: whichever of a step's values (its inputs, its outputs, or
its log, as steps run side by side) would have taken the run past it first."""


def home_with(store_target: Target, tmp_path: Path, steps: str) -> Path:
    """A home whose runs may store 1 MiB, with workflow `fan` of `steps` (YAML lines)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(f"max_run_stored_bytes = {MIB}\n")
    assert swarm_inproc(home, "status", "--init", **store_target.env).returncode == 0
    write_workflow(tmp_path / "fan", f"name: fan\nversion: 1.0.0\nsteps:\n{steps}")
    registered = swarm_inproc(
        home, "workflow", "register", str(tmp_path / "fan"), **store_target.env
    )
    assert registered.returncode == 0, registered.stderr
    inputs = json.dumps({"big": "w" * BIG})
    made = swarm_inproc(
        home, "ticket", "create", "--title", "fan", "--workflow", "fan", "--inputs-json", inputs,
        **store_target.env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return home


def run(store_target: Target, home: Path) -> None:
    done = swarm(
        home, "start", "--foreground", "--until-idle", "--max-vms", "2", timeout=300,
        **store_target.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def stored(store_target: Target) -> int:
    """Bytes the steps' rows hold (inputs and outputs) and their logs."""
    (row,) = store_target.rows(
        "SELECT sum(length(CAST(inputs AS TEXT)) + coalesce(length(CAST(outputs AS TEXT)), 0))"
        " AS n FROM step_executions"
    )
    (logs,) = store_target.rows("SELECT sum(length(data)) AS n FROM step_logs")
    return int(row["n"] or 0) + int(logs["n"] or 0)


def test_steps_naming_one_big_input_fail_the_run_at_the_limit(
    store_target: Target, tmp_path: Path
) -> None:
    """30 independent steps each naming a 200 KiB input (6 MiB of rows): the run fails
    once 1 MiB is stored, and the store holds no more than that."""
    steps = "".join(
        f'  - {{id: s{i}, agent: echo, inputs: {{text: "${{inputs.big}}"}}}}\n' for i in range(30)
    )
    home = home_with(store_target, tmp_path, steps)
    run(store_target, home)
    (ticket,) = store_target.rows("SELECT status, error FROM tickets")
    assert ticket["status"] == "failed"
    found = OVER.fullmatch(ticket["error"])
    assert found, ticket["error"]
    assert int(found.group(2).replace(",", "")) > MIB
    # (PostgreSQL's jsonb text has its own spacing: a few bytes more than as measured)
    assert stored(store_target) <= MIB + 1024
    shown = swarm_inproc(home, "ticket", "show", "1", **store_target.env)
    assert shown.returncode == 0 and "max_run_stored_bytes" in shown.stdout


def test_a_chain_whose_outputs_pass_the_limit_fails_on_them(
    store_target: Target, tmp_path: Path
) -> None:
    """Echo steps one after another: each stores its inputs, its log (the inputs it
    prints) and as much outputs; the second step's outputs would pass 1 MiB, so they are
    not stored and the run fails."""
    steps = '  - {id: s0, agent: echo, inputs: {text: "${inputs.big}"}}\n' + "".join(
        f'  - {{id: s{i}, agent: echo, needs: [s{i - 1}], inputs: {{text: "${{inputs.big}}"}}}}\n'
        for i in range(1, 6)
    )
    home = home_with(store_target, tmp_path, steps)
    run(store_target, home)
    (ticket,) = store_target.rows("SELECT status, error FROM tickets")
    assert ticket["status"] == "failed"
    assert OVER.fullmatch(ticket["error"]), ticket["error"]
    assert ticket["error"].startswith("step 's1' failed: outputs: ")
    rows = store_target.rows("SELECT step_id, status FROM step_executions ORDER BY id")
    assert [(r["step_id"], r["status"]) for r in rows][:2] == [("s0", "done"), ("s1", "failed")]
    assert stored(store_target) <= MIB + 1024


def test_steps_whose_logs_pass_the_limit_fail_the_run_and_store_no_more(
    store_target: Target, tmp_path: Path
) -> None:
    """Each step prints 700 KiB (its outputs keep 128 KiB of it, its log all): the
    second step's log passes 1 MiB; what is past it is not stored (a line says so), and
    the run fails naming the setting."""
    write_agent(
        tmp_path / "noisy",
        "name: noisy\nversion: 1.0.0\nkind: shell\n"
        "command: \"head -c 716800 /dev/zero | tr '\\\\0' x\"\n",
    )
    added = swarm_inproc(home := tmp_path / "home", "agent", "register", str(tmp_path / "noisy"),
                         **store_target.env)  # fmt: skip
    assert added.returncode == 0, added.stderr
    steps = "  - {id: s0, agent: noisy}\n" + "".join(
        f"  - {{id: s{i}, agent: noisy, needs: [s{i - 1}]}}\n" for i in range(1, 4)
    )
    assert home_with(store_target, tmp_path, steps) == home
    run(store_target, home)
    (ticket,) = store_target.rows("SELECT status, error FROM tickets")
    assert ticket["status"] == "failed"
    assert re.fullmatch(
        r"step 's1' failed: log of step 's1': [\d,]+ bytes would bring the run's stored step"
        r" values to [\d,]+ bytes, more than the 1 MiB a run may store \(setting"
        r" max_run_stored_bytes\)",
        ticket["error"],
    ), ticket["error"]
    rows = store_target.rows("SELECT step_id, status FROM step_executions ORDER BY id")
    assert [(r["step_id"], r["status"]) for r in rows][:2] == [("s0", "done"), ("s1", "failed")]
    logs = store_target.rows("SELECT data FROM step_logs ORDER BY id")
    assert "the rest of this log is not stored" in logs[-1]["data"]
    assert stored(store_target) <= MIB + 1024


def test_a_retry_after_a_log_passed_the_limit_names_the_log_not_its_inputs(
    store_target: Target, tmp_path: Path
) -> None:
    """A failing step that retries, printing 400 KiB each time: its log passes 1 MiB
    on the third attempt, and the next attempt is refused before it runs. The line
    names the log (before: `inputs: log of step 's0': ...`, blaming the inputs)."""
    write_agent(
        tmp_path / "noisy",
        "name: noisy\nversion: 1.0.0\nkind: shell\nretry: {attempts: 6, backoff_seconds: 0}\n"
        "command: \"head -c 409600 /dev/zero | tr '\\\\0' x; exit 1\"\n",
    )
    added = swarm_inproc(home := tmp_path / "home", "agent", "register", str(tmp_path / "noisy"),
                         **store_target.env)  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert home_with(store_target, tmp_path, "  - {id: s0, agent: noisy}\n") == home
    run(store_target, home)
    (ticket,) = store_target.rows("SELECT status, error FROM tickets")
    assert ticket["status"] == "failed"
    assert ticket["error"].startswith("step 's0' failed: log of step 's0': "), ticket["error"]
    (last,) = store_target.rows(
        "SELECT error FROM step_executions WHERE id = (SELECT max(id) FROM step_executions)"
    )
    assert last["error"].startswith("log of step 's0': "), last["error"]
