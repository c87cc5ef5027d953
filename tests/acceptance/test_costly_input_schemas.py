"""A ticket's inputs whose check against its agent's `inputs` schema would take minutes (the
tester's two: `uniqueItems` over 6,000 small objects, quadratic; a `pattern` that
backtracks catastrophically inside `re`, which holds the GIL) fail that ticket alone, with
one line, once the check has taken `CHECK_SECONDS`: the check runs in a helper process
that is then killed. The engine goes on meanwhile (a running ticket keeps its short lease
and ends `done`, a later ticket runs, `stop` stops it), and the helper never outlives the
engine, not even one killed with SIGKILL in the middle of a check."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from tests.acceptance.conftest import engine_ready, status_of, write_agent
from tests.support.cli import (
    EXAMPLES,
    insert_open_tickets,
    query,
    start_engine,
    swarm,
    swarm_inproc,
    wait_until,
)

from swarm_engine.schema_check import CHECK_SECONDS
from swarm_engine.vm.proctree import pid_alive

LEASE = {
    "SWARM_HEARTBEAT_INTERVAL": "0.3",
    "SWARM_POLL_INTERVAL": "0.5",
    "SWARM_LEASE_TTL": "2",
}
"""A lease that a frozen engine (the GIL held by a check) loses within two seconds."""
UNIQUE = "name: tagger\nkind: shell\ncommand: echo ok\ninputs:\n  type: object\n  properties:\n    items: {type: array, uniqueItems: true}\n"  # fmt: skip
PATTERN = "name: checked\nkind: shell\ncommand: echo ok\ninputs:\n  type: object\n  properties:\n    code: {type: string, pattern: '^(a+)+$'}\n"  # fmt: skip
WAITER = "name: waiter\nkind: shell\ntimeout_seconds: 120\ncommand: while [ ! -e go ]; do sleep 0.05; done; echo ok\n"  # fmt: skip
"""Runs until the test writes `go` into its workspace: as long as the costly checks take."""
SIX_THOUSAND = json.dumps({"items": [{"n": i} for i in range(6000)]})
BACKTRACKS = json.dumps({"code": "a" * 34 + "!"})


def costly(agent: str) -> str:
    return (
        f"step 'main' failed: inputs: could not be checked against agent {agent}@1.0.0's "
        f"schema within {CHECK_SECONDS:g} s (a schema or input too costly to check)"
    )


def register(home: Path, folder: Path, yaml_text: str) -> None:
    done = swarm_inproc(home, "agent", "register", str(write_agent(folder, yaml_text)))
    assert done.returncode == 0, done.stdout + done.stderr


def checkers_of(pid: int) -> list[int]:
    """Pids of schema-checking helpers started by process `pid` (whoever their parent
    is now: their command line names the engine that started them)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"swarm_engine.schema_worker" in argv and str(pid).encode() in argv:
            found.append(int(entry))
    return found


@pytest.mark.slow
def test_inputs_too_costly_to_check_fail_their_ticket_alone(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    for name, text in (("tagger", UNIQUE), ("checked", PATTERN), ("waiter", WAITER)):
        register(home, tmp_path / name, text)
    engine = start_engine(home, "--max-vms", "4", **LEASE)
    engines.append(engine)
    engine_ready(home, engine)
    insert_open_tickets(db, [("innocent", "waiter", "{}")])
    (step,) = wait_until(
        lambda: query(db, "SELECT vm_id FROM step_executions WHERE status = 'running'"),
        60,
        "the innocent ticket to run",
    )
    (vm,) = query(db, "SELECT workspace FROM vms WHERE id = ?", step["vm_id"])
    insert_open_tickets(
        db,
        [("6000 items", "tagger", SIX_THOUSAND), ("backtracks", "checked", BACKTRACKS),
         ("later", "echo", '{"x": 1}')],
    )  # fmt: skip

    wait_until(
        lambda: status_of(home, 2) == "failed" and status_of(home, 3) == "failed",
        60,
        "both costly tickets to fail",
    )
    wait_until(lambda: status_of(home, 4) == "done", 60, "the later ticket to run")
    assert status_of(home, 1) == "running"  # its lease held all along: still its only run
    (Path(vm["workspace"]) / "go").write_text("")
    wait_until(lambda: status_of(home, 1) == "done", 60, "the innocent ticket to finish")

    rows = {t["id"]: t for t in query(db, "SELECT id, status, attempts, error FROM tickets")}
    assert rows[2]["error"] == costly("tagger"), rows[2]
    assert rows[3]["error"] == costly("checked"), rows[3]
    assert [rows[i]["attempts"] for i in (1, 2, 3, 4)] == [1, 1, 1, 1], rows
    runs = query(db, "SELECT ticket_id, status, error FROM workflow_runs ORDER BY ticket_id")
    assert [(r["ticket_id"], r["status"]) for r in runs] == [
        (1, "done"), (2, "failed"), (3, "failed"), (4, "done"),
    ], runs  # fmt: skip
    steps = query(db, "SELECT status, error FROM step_executions WHERE run_id = 2")
    assert steps == [{"status": "failed", "error": costly("tagger").split(": ", 1)[1]}], steps

    stopped = swarm(home, "stop", "--timeout", "30")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped
    out, _ = engine.communicate(timeout=30)
    assert engine.returncode == 0, out
    assert "Traceback" not in out, out
    assert checkers_of(engine.pid) == []


def test_an_engine_killed_mid_check_leaves_no_checker(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    register(home, tmp_path / "checked", PATTERN)
    engine = start_engine(home, "--max-vms", "1", **LEASE)
    engines.append(engine)
    engine_ready(home, engine)
    insert_open_tickets(home / "tickets.db", [("backtracks", "checked", BACKTRACKS)])
    (checker,) = wait_until(lambda: checkers_of(engine.pid), 60, "the check to start")
    os.kill(engine.pid, signal.SIGKILL)  # the engine alone, not its process group
    engine.wait()
    # A dying process's command line empties before it becomes a zombie: wait for the
    # zombie (or its end), the state in which it can no longer do anything.
    wait_until(lambda: not pid_alive(checker), 30, "the checker to die with the engine")
    assert checkers_of(engine.pid) == []


def test_an_agent_with_a_schema_still_runs_and_is_refused_as_before(
    home: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """The example word-count agent's schema: a matching ticket is done, one that does not
    match fails with jsonschema's own message, each checked by the same helper."""
    done = swarm_inproc(home, "agent", "register", str(EXAMPLES / "agents" / "word-count"))
    assert done.returncode == 0, done.stdout + done.stderr
    insert_open_tickets(
        home / "tickets.db",
        [("counts", "word-count", '{"text": "a b"}'), ("no text", "word-count", '{"t": 1}')],
    )
    engine = start_engine(home, "--max-vms", "2", "--until-idle", **LEASE)
    engines.append(engine)
    out, _ = engine.communicate(timeout=90)
    assert engine.returncode == 0, out
    rows = query(home / "tickets.db", "SELECT status, error, result FROM tickets ORDER BY id")
    assert rows[0]["status"] == "done" and '"words": 2' in rows[0]["result"], rows[0]
    assert rows[1] == {
        "status": "failed",
        "error": "step 'main' failed: inputs: 'text' is a required property",
        "result": None,
    }, rows[1]
    assert checkers_of(engine.pid) == []


def test_good_tickets_are_done_while_a_costly_one_is_being_checked(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """Checks run side by side (a helper each, up to `min(max_vms, MAX_HELPERS)`): tickets
    that come while a costly check runs are checked by another helper and done before the
    costly one fails, not each after it."""
    db = home / "tickets.db"
    register(home, tmp_path / "checked", PATTERN)
    engine = start_engine(home, "--max-vms", "2", **LEASE)
    engines.append(engine)
    engine_ready(home, engine)
    insert_open_tickets(db, [("backtracks", "checked", BACKTRACKS)])
    wait_until(lambda: checkers_of(engine.pid), 60, "the costly check to start")
    good = json.dumps({"code": "aaa"})  # checked against the same schema: matches at once
    insert_open_tickets(db, [("good 1", "checked", good), ("good 2", "checked", good)])

    wait_until(lambda: status_of(home, 3) in ("done", "failed"), 60, "the good tickets to end")
    assert [status_of(home, i) for i in (1, 2, 3)] == ["running", "done", "done"]
    wait_until(lambda: status_of(home, 1) == "failed", 60, "the costly ticket to fail")
    (row,) = query(db, "SELECT error FROM tickets WHERE id = 1")
    assert row["error"] == costly("checked"), row

    stopped = swarm(home, "stop", "--timeout", "30")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped
    out, _ = engine.communicate(timeout=30)
    assert engine.returncode == 0 and "Traceback" not in out, out
    assert checkers_of(engine.pid) == []


def test_registering_a_schema_too_costly_to_check_is_refused_with_one_line(
    home: Path, tmp_path: Path
) -> None:
    """A draft-04 `enum` is `uniqueItems` to its meta-schema: checking 3,000 objects is
    quadratic (about 15 s). The check runs in a helper, bounded as a ticket's is."""
    enum = {"$schema": "http://json-schema.org/draft-04/schema#", "enum": [{"a": i} for i in range(3000)]}  # fmt: skip
    text = f"name: slow\nkind: shell\ncommand: echo ok\ninputs: {json.dumps(enum)}\n"
    done = swarm(home, "agent", "register", str(write_agent(tmp_path / "slow", text)))
    assert done.returncode == 5, done
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith(f"inputs: the schema could not be checked within {CHECK_SECONDS:g} s")
    ), done.stderr
    assert "slow" not in swarm(home, "agent", "list").stdout
