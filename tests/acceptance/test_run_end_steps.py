"""However a workflow run ends short of `done` while its engine records it (a step
failed, the ticket timed out, was cancelled, or the engine was stopped), its rows say the
same things about its steps: one row per step; a step that was running is `cancelled`
with the error `cancelled`; a step that never started is `skipped` with `not run: WHY`
(tester h-197: a cancelled run had no row for the steps that never started, while a
failed run recorded them skipped; tester h-198: stopped steps' errors were `cancelled` or
NULL)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import zlib
from pathlib import Path

from tests.acceptance.conftest import write_agent, write_workflow
from tests.conftest import Target
from tests.support.cli import end_engine, query, start_engine, swarm, wait_until

CHAIN = """name: chain
version: "1"
steps:
  - id: first
    agent: nap
  - id: second
    agent: nap
    needs: [first]
  - id: third
    agent: nap
    needs: [second]
  - id: beside
    agent: nap
  - id: wide1
    agent: nap
  - id: wide2
    agent: nap
"""
"""Four steps ready at once (`first`, `beside`, `wide1`, `wide2`), of which two run on the
engine's two slots while the other two wait for a VM, their rows queued; two steps that
wait for `first`."""


def nap_of(tmp_path: Path) -> str:
    """The steps' command: a sleep no other process of this host runs (found in /proc),
    whatever other test runs beside this one."""
    return f"sleep {10**6 + zlib.crc32(str(tmp_path).encode()) % 10**6}"


def ticket_with_a_chain(home: Path, tmp_path: Path, *options: str, **env: str) -> None:
    nap = write_agent(tmp_path / "nap", f"name: nap\nkind: shell\ncommand: {nap_of(tmp_path)}\n")
    assert swarm(home, "agent", "register", str(nap), **env).returncode == 0
    wf = write_workflow(tmp_path / "wf", CHAIN)
    made = swarm(home, "workflow", "register", str(wf), **env)
    assert made.returncode == 0, made.stderr
    made = swarm(home, "ticket", "create", "--title", "t", "--workflow", "chain", *options, **env)
    assert made.returncode == 0, made.stderr


def two_running(target: Target) -> bool:
    rows = target.rows("SELECT status FROM step_executions")
    return [r["status"] for r in rows].count("running") == 2 and len(rows) == 4


def naps(command: str) -> int:
    """The processes running `command` on this host now."""
    found = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            found += (proc / "cmdline").read_bytes() == command.replace(" ", "\0").encode() + b"\0"
        except OSError:
            continue
    return found


def steps_of_the_ended_run(target: Target) -> dict[str, tuple[str, str | None, bool]]:
    """Each step's (status, error, whether it started), once the run's end is recorded."""
    [run] = wait_until(
        lambda: target.rows("SELECT id FROM workflow_runs WHERE status <> 'running'"),
        60,
        "the run's end to be recorded",
    )
    rows = target.rows(
        "SELECT step_id, status, error, started_at IS NOT NULL AS started"
        f" FROM step_executions WHERE run_id = {int(run['id'])}"
    )
    steps = {r["step_id"]: (r["status"], r["error"], bool(r["started"])) for r in rows}
    assert len(rows) == len(steps) == 6, rows  # one row per step, none twice
    return steps


def assert_ended(steps: dict[str, tuple[str, str | None, bool]], why: str) -> None:
    started = {sid for sid, (_, _, began) in steps.items() if began}
    assert len(started) == 2 and started <= {"first", "beside", "wide1", "wide2"}, steps
    for sid, (status, error, _) in steps.items():
        # a step that ran was stopped; one that never did (its row queued for a VM, or
        # never written) was skipped, saying why
        want = ("cancelled", "cancelled") if sid in started else ("skipped", f"not run: {why}")
        assert (status, error) == want, (sid, steps)


def test_a_cancelled_run_records_the_steps_it_never_started(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]], store_target: Target
) -> None:
    env = store_target.env
    ticket_with_a_chain(home, tmp_path, **env)
    engines.append(start_engine(home, "--max-vms", "2", **env))
    wait_until(lambda: two_running(store_target), 60, "two steps to run")
    assert swarm(home, "ticket", "cancel", "1", **env).returncode == 0
    assert_ended(steps_of_the_ended_run(store_target), "the ticket was cancelled")


def test_a_timed_out_run_records_the_steps_it_never_started(
    home: Path, tmp_path: Path, store_target: Target
) -> None:
    env = store_target.env
    ticket_with_a_chain(home, tmp_path, "--timeout", "3", **env)
    done = swarm(home, "run-ticket", "1", "--wait", timeout=120, SWARM_MAX_VMS="2", **env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "timed out after 3s" in done.stdout + done.stderr
    assert_ended(steps_of_the_ended_run(store_target), "ticket timed out after 3s")


def test_a_run_the_engine_stops_records_the_steps_it_never_started(
    home: Path, tmp_path: Path, store_target: Target
) -> None:
    env = store_target.env
    ticket_with_a_chain(home, tmp_path, **env)
    engine = start_engine(home, "--max-vms", "2", **env)
    try:
        wait_until(lambda: two_running(store_target), 60, "two steps to run")
    finally:
        end_engine(engine)  # SIGTERM twice: the second aborts the runs
    [run] = store_target.rows("SELECT error FROM workflow_runs")
    assert run["error"] == "aborted: the engine was stopped during the run"
    assert_ended(steps_of_the_ended_run(store_target), run["error"])


def test_a_run_whose_engine_died_is_closed_with_its_queued_steps_skipped(
    home: Path, tmp_path: Path, store_target: Target
) -> None:
    """An engine killed (`kill -9`, its sandboxes with it) while two steps run and two
    wait for a VM: the run is closed by another engine (the lease reclaim, or the close of
    a dead engine's runs, whichever comes first), which knows only the rows written: its
    running steps `failed` with the run's error, the queued ones `skipped` with `not run:`
    and that error (before: `failed`, as if they had run); none of them ran again."""
    env = store_target.env
    fast = {"SWARM_LEASE_TTL": "3", "SWARM_HEARTBEAT_INTERVAL": "0.3", **env}
    ticket_with_a_chain(home, tmp_path, "--max-attempts", "1", **env)
    engine = start_engine(home, "--max-vms", "2", **fast)
    try:
        wait_until(lambda: two_running(store_target), 60, "two steps to run")
    finally:
        os.killpg(engine.pid, signal.SIGKILL)  # (its sandboxes with it)
        engine.communicate(timeout=30)
    wait_until(lambda: naps(nap_of(tmp_path)) == 0, 30, "the killed engine's steps to end")
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=120, **fast)
    assert done.returncode == 0, done.stdout + done.stderr
    [run] = store_target.rows("SELECT status, error FROM workflow_runs")
    assert run["status"] == "failed" and run["error"], run
    rows = store_target.rows("SELECT step_id, status, error, started_at FROM step_executions")
    assert len(rows) == 4, rows  # the rows written: steps that never had one have none
    for row in rows:
        if row["started_at"] is not None:
            assert (row["status"], row["error"]) == ("failed", run["error"]), rows
        else:
            assert (row["status"], row["error"]) == ("skipped", f"not run: {run['error']}"), rows
    assert [r["status"] for r in rows].count("skipped") == 2, rows
    [ticket] = store_target.rows("SELECT status FROM tickets")
    assert ticket["status"] == "failed"


def test_a_run_cancelled_then_reopened_before_its_end_was_recorded_records_every_step(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """The ticket is cancelled, and reopened by another client before its engine could
    record the run's end (the store's write lock held meanwhile): the engine closes its own
    run as cancelled, unfenced, with the same rows as any cancelled run (tester h-200:
    1 or 2 steps of such runs had no row)."""
    db = home / "tickets.db"
    ticket_with_a_chain(home, tmp_path)
    engines.append(start_engine(home, "--max-vms", "2"))
    wait_until(lambda: two_running(Target("sqlite", db, {})), 60, "two steps to run")
    wait_until(lambda: naps(nap_of(tmp_path)) == 2, 60, "the two steps' processes")
    assert swarm(home, "ticket", "cancel", "1").returncode == 0
    lock = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # (readers go on: the engine sees the cancel)
        wait_until(lambda: naps(nap_of(tmp_path)) == 0, 60, "the engine to stop its steps")
        lock.execute(
            "UPDATE tickets SET status = 'open', attempts = 0, engine_id = NULL,"
            " attempt_id = NULL, lease_expires_at = NULL, error = NULL WHERE id = 1"
        )
        lock.execute("COMMIT")
    finally:
        lock.close()
    [run] = wait_until(
        lambda: query(
            db, "SELECT status, error FROM workflow_runs WHERE id = 1 AND status <> 'running'"
        ),
        60,
        "the first run's end",
    )
    assert run["status"] == "cancelled" and "reopened" in run["error"], run
    rows = query(
        db,
        "SELECT step_id, status, error, started_at IS NOT NULL AS started"
        " FROM step_executions WHERE run_id = 1",
    )
    steps = {r["step_id"]: (r["status"], r["error"], bool(r["started"])) for r in rows}
    assert len(rows) == len(steps) == 6, rows
    assert_ended(steps, "the ticket was cancelled")


def test_steps_whose_first_row_a_failing_sibling_cut_short_still_get_one_row(
    home: Path, tmp_path: Path, store_target: Target
) -> None:
    """A step fails on its inputs while the siblings that became ready with it write their
    first rows: the write the run's end cuts short took its row or did not, and either way
    the step ends with exactly one row (tester h-204: the step after the failing one in
    plan order had none in 2-4 runs of 10, on both stores, as the engine counted it
    written from the write's start)."""
    env = store_target.env
    fan = "\n".join(
        f'  - id: f{i}\n    agent: echo\n    inputs: {{v: "${{steps.a.outputs.v}}"}}\n    needs: [a]'
        for i in range(30)
    )
    wf = write_workflow(
        tmp_path / "wf",
        'name: race\nversion: "1"\nsteps:\n  - id: a\n    agent: echo\n    inputs: {v: 1}\n'
        '  - id: bad\n    agent: echo\n    inputs: {x: "${steps.a.outputs.nope}"}\n'
        f"    needs: [a]\n{fan}\n",
    )
    made = swarm(home, "workflow", "register", str(wf), **env)
    assert made.returncode == 0, made.stderr
    for _ in range(10):
        made = swarm(home, "ticket", "create", "--title", "t", "--workflow", "race", **env)
        assert made.returncode == 0, made.stderr
    done = swarm(home, "start", "--foreground", "--until-idle", "--max-vms", "4",
                 timeout=300, **env)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    tickets = store_target.rows("SELECT status, error FROM tickets")
    assert [t["status"] for t in tickets] == ["failed"] * 10, tickets
    assert all("steps.a.outputs.nope" in t["error"] for t in tickets), tickets
    counts = store_target.rows(
        "SELECT r.id, count(s.id) AS steps, count(DISTINCT s.step_id) AS ids"
        " FROM workflow_runs r LEFT JOIN step_executions s ON s.run_id = r.id GROUP BY r.id"
    )
    assert len(counts) == 10, counts
    assert all((c["steps"], c["ids"]) == (32, 32) for c in counts), counts
    assert not store_target.rows(
        "SELECT 1 FROM step_executions WHERE status IN ('queued', 'running')"
    )


def test_workflow_outputs_that_do_not_resolve_are_not_blamed_on_a_step(
    home: Path, tmp_path: Path
) -> None:
    """A workflow's `outputs:` naming a key no step gave fails the run with a line about
    the workflow's outputs, not `step 'outputs' failed` (tester h-204: ambiguous beside a
    step whose id is `outputs`, whose row says done)."""
    wf = write_workflow(
        tmp_path / "wf",
        'name: outs\nversion: "1"\nsteps:\n  - id: outputs\n    agent: echo\n'
        '    inputs: {v: 1}\noutputs:\n  got: "${steps.outputs.outputs.missing}"\n',
    )
    assert swarm(home, "workflow", "register", str(wf)).returncode == 0
    made = swarm(home, "ticket", "create", "--title", "t", "--workflow", "outs")
    assert made.returncode == 0, made.stderr
    done = swarm(home, "run-ticket", "1", "--wait", timeout=120)
    assert done.returncode != 0, done.stdout
    [ticket] = query(home / "tickets.db", "SELECT status, error FROM tickets")
    assert ticket["status"] == "failed"
    assert ticket["error"].startswith("the workflow's outputs: "), ticket
    assert "steps.outputs.outputs.missing" in ticket["error"], ticket
    [step] = query(home / "tickets.db", "SELECT step_id, status FROM step_executions")
    assert (step["step_id"], step["status"]) == ("outputs", "done")


def test_the_run_of_a_workflow_that_does_not_resolve_names_it(home: Path) -> None:
    """A workflow row another client wrote with a cycle fails its ticket at plan time; the
    failed run names the workflow and version the ticket asked for, so `workflow runs
    NAME` lists it (tester h-204: its name and version were NULL, and the failed runs of a
    broken workflow could not be listed)."""
    spec = (
        '{"name": "loop", "version": "1.0.0", "steps": ['
        '{"id": "a", "agent": "echo", "needs": ["b"]}, {"id": "b", "agent": "echo", "needs": ["a"]}]}'
    )
    conn = sqlite3.connect(home / "registry.db", isolation_level=None)
    conn.execute("INSERT INTO workflows (name, version, spec) VALUES ('loop', '1.0.0', ?)", (spec,))
    conn.close()
    db = home / "tickets.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "INSERT INTO tickets (title, status, execution_mode, workflow_id) VALUES"
        " ('latest', 'open', 'workflow', 'loop'), ('pinned', 'open', 'workflow', 'loop@1.0.0')"
    )
    conn.close()
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = query(db, "SELECT ticket_id, status, workflow_name, workflow_version FROM workflow_runs")
    assert [(r["ticket_id"], r["status"], r["workflow_name"], r["workflow_version"])
            for r in runs] == [(1, "failed", "loop", None), (2, "failed", "loop", "1.0.0")]  # fmt: skip
    listed = swarm(home, "workflow", "runs", "loop", "--json")
    assert listed.returncode == 0, listed.stderr
    shown = json.loads(listed.stdout)
    assert sorted((r["ticket_id"], r["status"]) for r in shown) == [(1, "failed"), (2, "failed")]
    assert swarm(home, "workflow", "runs", "nosuch").returncode == 3  # not registered
