"""`run-ticket --wait` end to end: real CLI processes, real SQLite files, real sandboxes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent, write_workflow
from tests.support.cli import (
    env_for,
    query,
    snapshot,
    sqlite_shell,
    start_engine,
    swarm,
    swarm_inproc,
    wait_until,
)

from swarm_engine.vm.proctree import tagged


def fk_violations(db: Path) -> list[dict[str, object]]:
    return query(db, "PRAGMA foreign_key_check")


def test_ticket_inserted_with_sqlite3_runs_to_done(home: Path) -> None:
    db = home / "tickets.db"
    sqlite_shell(
        db,
        "INSERT INTO tickets (title, description, status, agent_id)"
        " VALUES ('hello', 'say hello', 'open', 'echo');",
    )
    done = swarm(home, "run-ticket", "1", "--wait")
    assert done.returncode == 0, done.stderr
    assert "ticket 1 done" in done.stdout
    ticket = query(db, "SELECT * FROM tickets WHERE id = 1")[0]
    assert ticket["status"] == "done" and ticket["attempts"] == 1
    runs = query(db, "SELECT * FROM workflow_runs")
    steps = query(db, "SELECT * FROM step_executions")
    assert len(runs) == 1 and len(steps) == 1
    assert runs[0]["ticket_id"] == 1 and runs[0]["status"] == "done"
    assert steps[0]["run_id"] == runs[0]["id"] and steps[0]["status"] == "done"
    assert steps[0]["agent_name"] == "echo" and steps[0]["exit_code"] == 0
    assert json.loads(steps[0]["outputs"]) == {}
    assert steps[0]["vm_id"] and steps[0]["started_at"] and steps[0]["duration_ms"] is not None
    vm = query(db, "SELECT * FROM vms WHERE id = ?", steps[0]["vm_id"])[0]
    assert vm["state"] == "destroyed" and vm["step_execution_id"] == steps[0]["id"]
    assert fk_violations(db) == []


def test_echo_returns_its_inputs_through_the_vm(home: Path) -> None:
    swarm(home, "ticket", "create", "--title", "e", "--agent", "echo",
          "--inputs-json", '{"a": [1, 2], "b": {"c": "ü"}}', "--input", "n=3", check=True)  # fmt: skip
    done = swarm(home, "run-ticket", "1", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["status"] == "done"
    assert out["result"] == {"a": [1, 2], "b": {"c": "ü"}, "n": 3}
    assert out["run"]["steps"][0]["outputs"] == out["result"]


def test_echo_returns_inputs_larger_than_the_kept_output_whole(home: Path) -> None:
    """Echo's round trip goes through the VM's standard input and output; inputs longer
    than what is kept of a command's output (its head and tail) come back whole."""
    swarm(home, "ticket", "list", check=True)  # the store is made
    inputs = {"doc": "".join(f"{i:06d}," for i in range(40_000)) + "ü", "n": 7}
    with sqlite3.connect(home / "tickets.db") as db:  # longer than a command-line argument
        db.execute(
            "INSERT INTO tickets (title, status, agent_id, inputs) VALUES ('big', 'open', 'echo', ?)",
            (json.dumps(inputs),),
        )
    done = swarm(home, "run-ticket", "1", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["status"] == "done" and out["result"] == inputs
    log = swarm(home, "logs", "1", check=True).stdout
    assert "bytes cut" in log and "000000," in log and "039999," in log


@pytest.mark.parametrize(("inputs", "kind"), [("[1, 2]", "an array"), ("null", "null"),
                                             ("7", "a number"), ('"x"', "a string")])  # fmt: skip
def test_inputs_that_are_no_object_are_named_in_json_terms(
    home: Path, inputs: str, kind: str
) -> None:
    swarm(home, "ticket", "list", check=True)  # the store is made
    sqlite_shell(home / "tickets.db",
                 f"INSERT INTO tickets (title, status, agent_id, inputs) VALUES ('t', 'open',"
                 f" 'echo', '{inputs}');")  # fmt: skip
    swarm(home, "start", "--foreground", "--until-idle", check=True)
    (row,) = query(home / "tickets.db", "SELECT status, error FROM tickets")
    assert row["status"] == "failed"
    assert f"inputs: must be a JSON object, not {kind}" in str(row["error"]), row


def test_three_step_workflow_runs_independent_steps_in_parallel(home: Path, tmp_path: Path) -> None:
    write_agent(
        tmp_path / "pkg" / "timed",
        """
        name: timed
        kind: shell
        command: |
          sleep 0.6
          printf '{"value": "%s-%s"}' "$INPUT_SIDE" "$INPUT_VALUE" > "$SWARM_OUTPUTS"
        """,
    )
    write_agent(
        tmp_path / "pkg" / "join",
        """
        name: join
        kind: shell
        command: printf '%s+%s' "$INPUT_LEFT" "$INPUT_RIGHT"
        """,
    )
    write_workflow(
        tmp_path / "wf",
        """
        name: fan-in
        steps:
          - id: left
            agent: timed
            inputs: {side: L, value: "${ticket.title}"}
          - id: right
            agent: timed
            inputs: {side: R, value: "${inputs.tag}"}
          - id: both
            agent: join
            inputs:
              left: ${steps.left.outputs.value}
              right: ${steps.right.outputs.value}
        """,
    )
    swarm(home, "agent", "register", "--all", str(tmp_path / "pkg"), check=True)
    swarm(home, "workflow", "register", str(tmp_path / "wf"), check=True)
    swarm(
        home,
        "ticket",
        "create",
        "--title",
        "T",
        "--workflow",
        "fan-in",
        "--input",
        "tag=x",
        check=True,
    )
    done = swarm(home, "run-ticket", "1", "--wait", "--max-vms", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    db = home / "tickets.db"
    steps = {s["step_id"]: s for s in query(db, "SELECT * FROM step_executions")}
    left, right, both = steps["left"], steps["right"], steps["both"]
    # the two independent steps overlapped in time (from the recorded timestamps)
    assert max(left["started_at"], right["started_at"]) < min(
        left["completed_at"], right["completed_at"]
    )
    # and the third started after both and received both outputs
    assert both["started_at"] >= max(left["completed_at"], right["completed_at"])
    assert json.loads(both["inputs"]) == {"left": "L-T", "right": "R-x"}
    assert json.loads(both["outputs"])["stdout"] == "L-T+R-x"
    assert len({s["vm_id"] for s in steps.values()}) == 3
    run = query(db, "SELECT * FROM workflow_runs")[0]
    assert run["workflow_name"] == "fan-in" and run["status"] == "done"
    assert fk_violations(db) == []


def test_a_failing_step_fails_run_and_ticket_and_leaves_no_sandbox(
    home: Path, tmp_path: Path
) -> None:
    write_agent(
        tmp_path / "boom",
        """
        name: boom
        kind: shell
        command: echo "disk on fire" >&2; exit 7
        """,
    )
    swarm(home, "agent", "register", str(tmp_path / "boom"), check=True)
    swarm(home, "ticket", "create", "--title", "b", "--agent", "boom", check=True)
    done = swarm(home, "run-ticket", "1", "--wait")
    assert done.returncode == 1
    assert "disk on fire" in done.stderr and "exited with 7" in done.stderr
    db = home / "tickets.db"
    ticket = query(db, "SELECT * FROM tickets")[0]
    assert ticket["status"] == "failed" and "exited with 7: disk on fire" in ticket["error"]
    run = query(db, "SELECT * FROM workflow_runs")[0]
    step = query(db, "SELECT * FROM step_executions")[0]
    assert run["status"] == "failed" and step["status"] == "failed" and step["exit_code"] == 7
    vm = query(db, "SELECT * FROM vms")[0]
    assert vm["state"] == "destroyed"
    assert not Path(vm["workspace"]).exists()
    assert list((home / "vms").iterdir()) == []


def test_a_step_over_its_timeout_is_killed_with_its_whole_tree(home: Path, tmp_path: Path) -> None:
    marker = f"31{uuid.uuid4().int % 10**6}"
    write_agent(
        tmp_path / "hang",
        f"""
        name: hang
        kind: shell
        timeout_seconds: 1
        command: sh -c 'sleep {marker} & sleep {marker}' & sleep {marker}
        """,
    )
    swarm(home, "agent", "register", str(tmp_path / "hang"), check=True)
    swarm(home, "ticket", "create", "--title", "h", "--agent", "hang", check=True)
    done = swarm(home, "run-ticket", "1", "--wait")
    assert done.returncode == 1
    step = query(home / "tickets.db", "SELECT * FROM step_executions")[0]
    assert step["status"] == "failed" and "timed out after 1s" in step["error"]
    assert step["exit_code"] == 124
    assert step["duration_ms"] >= 900  # it ran until the timeout, not less
    survivors = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, marker)]
    assert survivors == []
    assert tagged(step["vm_id"]) == []


def _cmdline_has(pid: str, needle: str) -> bool:
    try:
        return needle.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_step_retries_are_separate_step_executions(home: Path, tmp_path: Path) -> None:
    write_agent(
        tmp_path / "flaky",
        """
        name: flaky
        kind: shell
        command: exit 1
        retry: {attempts: 3, backoff_seconds: 0}
        """,
    )
    swarm(home, "agent", "register", str(tmp_path / "flaky"), check=True)
    swarm(home, "ticket", "create", "--title", "f", "--agent", "flaky", check=True)
    assert swarm(home, "run-ticket", "1", "--wait").returncode == 1
    steps = query(home / "tickets.db", "SELECT * FROM step_executions ORDER BY id")
    assert [s["retry_count"] for s in steps] == [0, 1, 2]
    assert {s["status"] for s in steps} == {"failed"} and len({s["vm_id"] for s in steps}) == 3


def test_a_ticket_over_its_timeout_fails_and_its_vm_is_destroyed(
    home: Path, tmp_path: Path
) -> None:
    write_agent(tmp_path / "nap", "name: nap\nkind: shell\ncommand: sleep 60\n")
    swarm(home, "agent", "register", str(tmp_path / "nap"), check=True)
    swarm(home, "ticket", "create", "--title", "t", "--agent", "nap", "--timeout", "1", check=True)
    done = swarm(home, "run-ticket", "1", "--wait")
    assert done.returncode == 1 and "ticket timed out after 1s" in done.stderr
    db = home / "tickets.db"
    step = query(db, "SELECT * FROM step_executions")[0]
    assert step["status"] == "cancelled"
    vm = query(db, "SELECT * FROM vms")[0]
    assert vm["state"] == "destroyed" and not Path(vm["workspace"]).exists()
    assert tagged(vm["id"]) == []


@pytest.mark.parametrize("isolation", ["auto", "none"])
def test_cleanup_reaps_the_vm_of_a_killed_run(home: Path, tmp_path: Path, isolation: str) -> None:
    """kill -9 of `run-ticket --wait` mid-step; `cleanup` kills what ran in its sandbox
    (without bubblewrap nothing else would) and deletes the workspace."""
    (home / "config.toml").write_text(f'[backend_options.process]\nisolation = "{isolation}"\n')
    write_agent(tmp_path / "nap", "name: nap\nkind: shell\ncommand: sleep 300\n")
    swarm(home, "agent", "register", str(tmp_path / "nap"), check=True)
    swarm(home, "ticket", "create", "--title", "t", "--agent", "nap", check=True)
    proc = subprocess.Popen([sys.executable, "-m", "swarm_engine", "run-ticket", "1", "--wait"],
                            env=env_for(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    db = home / "tickets.db"
    try:
        step = wait_until(
            lambda: query(db, "SELECT * FROM step_executions WHERE status = 'running'"),
            30,
            "the step",
        )[0]
        wait_until(lambda: tagged(step["vm_id"]), 10, "the sandbox process")
    finally:
        proc.kill()
        proc.wait()
    vm = query(db, "SELECT * FROM vms")[0]
    assert vm["state"] == "busy" and Path(vm["workspace"]).exists()
    fresh = json.loads(swarm(home, "cleanup", "--json", check=True).stdout)
    assert fresh["vms"] == [] and fresh["engines"] == []  # its heartbeat is recent yet
    sqlite_shell(db, "UPDATE engines SET heartbeat_at = '2000-01-01T00:00:00Z'")  # (as if later)
    done = swarm(home, "cleanup", "--json", check=True)
    report = json.loads(done.stdout)
    assert report["vms"] == [vm["id"]] and len(report["engines"]) == 1
    vm = query(db, "SELECT * FROM vms")[0]
    assert vm["state"] == "failed" and "reaped" in vm["error"]
    assert not Path(vm["workspace"]).exists()
    assert tagged(vm["id"]) == []
    assert query(db, "SELECT state FROM engines")[0]["state"] == "dead"
    # a second cleanup finds nothing more
    again = json.loads(swarm(home, "cleanup", "--json", check=True).stdout)
    assert again["vms"] == [] and again["engines"] == []


LAPSE_ENV = {"SWARM_LEASE_TTL": "2", "SWARM_HEARTBEAT_INTERVAL": "0.3"}


def _lapsed_ticket(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]], attempts: int = 3
) -> Path:
    """Ticket 1, running when its engine was `kill -9`ed, whose lease has since expired."""
    db = home / "tickets.db"
    write_agent(tmp_path / "nap", "name: nap\nkind: shell\ncommand: sleep 3; echo rested\n")
    swarm(home, "agent", "register", str(tmp_path / "nap"), check=True)
    create = ["ticket", "create", "--title", "t", "--agent", "nap", "--max-attempts", str(attempts)]
    swarm(home, *create, check=True)
    proc = start_engine(home, "--max-vms", "1", **LAPSE_ENV)
    engines.append(proc)
    wait_until(
        lambda: query(db, "SELECT 1 FROM step_executions WHERE status = 'running'"), 30, "the step"
    )
    os.killpg(proc.pid, signal.SIGKILL)  # the engine and its sandbox: it records nothing
    proc.wait()

    def lease_expired() -> bool:
        (row,) = query(db, "SELECT status, lease_expires_at FROM tickets")
        assert row["status"] == "running", row
        return datetime.fromisoformat(row["lease_expires_at"]) < datetime.now(UTC)

    wait_until(lease_expired, 30, "the killed engine's lease to expire")
    return db


def _ran_twice_once_each(db: Path) -> None:
    (ticket,) = query(db, "SELECT status, attempts FROM tickets")
    assert (ticket["status"], ticket["attempts"]) == ("done", 2), ticket
    runs = query(db, "SELECT status, error, engine_id FROM workflow_runs ORDER BY id")
    assert [r["status"] for r in runs] == ["failed", "done"], runs
    assert "lease expired" in runs[0]["error"], runs
    assert runs[0]["engine_id"] != runs[1]["engine_id"], runs


def test_run_ticket_wait_runs_a_killed_engines_ticket_once_its_lease_expired(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """`kill -9` of the engine running a ticket; once its lease has expired, `run-ticket
    --wait` re-queues the ticket (as a daemon's round would) and runs it to done. It
    refused it with exit 4, "its lease has expired: any running engine re-queues it",
    though it does the re-queuing itself first."""
    db = _lapsed_ticket(home, tmp_path, engines)
    done = swarm(home, "run-ticket", "1", "--wait", **LAPSE_ENV)
    assert done.returncode == 0, done.stderr
    _ran_twice_once_each(db)


def test_run_ticket_re_queues_a_killed_engines_ticket_once_its_lease_expired(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """Without --wait, the same ticket is re-queued for the engines (it only said that its
    lease had expired), and the next engine runs it once."""
    db = _lapsed_ticket(home, tmp_path, engines)
    done = swarm(home, "run-ticket", "1", **LAPSE_ENV)
    assert done.returncode == 0, done.stderr
    assert "its lease had run out" in done.stdout and "re-queued" in done.stdout, done.stdout
    assert query(db, "SELECT status FROM tickets")[0]["status"] == "open"
    again = swarm(home, "run-ticket", "1", **LAPSE_ENV)  # (queued already: nothing more)
    assert again.stdout == "ticket 1 is already queued\n", again.stdout
    swarm(home, "start", "--foreground", "--until-idle", "--max-vms", "1", check=True, **LAPSE_ENV)
    _ran_twice_once_each(db)


@pytest.mark.parametrize("wait", [False, True], ids=["queue", "wait"])
def test_run_ticket_says_a_lapsed_ticket_with_no_attempts_left_was_failed(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]], wait: bool
) -> None:
    """Its one attempt spent, the reclaim `run-ticket` does fails it: it says so (it said
    only `ticket 1 is failed (use 'ticket reopen' first)`, as if it had failed before)."""
    db = _lapsed_ticket(home, tmp_path, engines, attempts=1)
    done = swarm(home, "run-ticket", "1", *(["--wait"] if wait else []), **LAPSE_ENV)
    assert done.returncode == 4, done.stderr
    last = done.stderr.splitlines()[-1]  # (after a line naming the VM stopped, if any)
    assert last.startswith(
        "error: ticket 1: its lease ran out with no attempts left, and it was failed ('lease"
    ), done.stderr
    assert last.endswith("'swarm-engine ticket reopen 1' queues it again"), done.stderr
    (ticket,) = query(db, "SELECT status, attempts FROM tickets")
    assert (ticket["status"], ticket["attempts"]) == ("failed", 1), ticket


READ_ONLY = [
    ("status",),
    ("ticket", "list"),
    ("ticket", "show", "1"),
    ("ticket", "cancel", "1"),
    ("logs", "1"),
    ("agent", "list"),
    ("workflow", "list"),
    ("db", "path"),
    ("stop",),
    ("cleanup",),
]


@pytest.mark.parametrize("args", READ_ONLY, ids=[" ".join(a) for a in READ_ONLY])
def test_a_command_that_only_looks_does_not_create_a_home(tmp_path: Path, args: tuple[str]) -> None:
    home = tmp_path / "typo" / "home"
    done = swarm_inproc(home, *args)
    assert (done.returncode, done.stdout) == (6, ""), done.stderr
    assert done.stderr == (
        f"error: no swarm-engine home at {home} (a typo in --home or SWARM_HOME?);"
        " 'swarm-engine status --init' creates it\n"
    )
    assert not (tmp_path / "typo").exists()


def test_the_first_command_that_adds_creates_the_home_and_both_databases(tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    done = swarm(home, "ticket", "create", "--title", "t", "--agent", "echo", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["id"] == 1, done.stderr
    assert (home / "tickets.db").is_file() and (home / "registry.db").is_file()
    agents = {r["name"] for r in query(home / "registry.db", "SELECT name FROM agents")}
    assert {"echo", "shell", "claude", "_template:claude-agent"} <= agents
    listed = swarm(home, "ticket", "list", "--json")
    assert listed.stderr == "" and [t["id"] for t in json.loads(listed.stdout)] == [1]
    # a ticket store elsewhere: not created by a look, created by `status --init`
    custom = tmp_path / "elsewhere" / "t.db"
    refused = swarm(home, "--tickets-db", str(custom), "status")
    assert refused.returncode == 6 and refused.stderr.startswith(f"error: no database at {custom};")
    assert not custom.exists()
    assert swarm(home, "--tickets-db", str(custom), "status", "--init").returncode == 0
    assert custom.is_file()


def test_an_empty_folder_becomes_a_home_with_a_note(tmp_path: Path) -> None:
    """What `SWARM_HOME=$(mktemp -d) swarm-engine status` (the cases' _lib.sh) relies on."""
    home = tmp_path / "made-by-mktemp"
    home.mkdir()
    done = swarm(home, "status")
    assert done.returncode == 0
    assert done.stderr == f"note: created a new, empty store at {home / 'tickets.db'}\n"
    assert (home / "tickets.db").is_file() and (home / "registry.db").is_file()
    assert swarm(home, "status").stderr == ""  # said once
    busy = tmp_path / "not-empty"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine\n")
    refused = swarm(busy, "ticket", "list")
    assert refused.returncode == 6 and "no database at" in refused.stderr
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("setting", ["SWARM_REGISTRY_URL", "SWARM_DATABASE_URL"])
def test_a_sqlite_url_gets_a_note_for_a_new_file_and_no_folders_made(
    home: Path, tmp_path: Path, setting: str
) -> None:
    """A mistyped `sqlite:///` URL is seen at once: a new database at it says so on stderr
    (as a new home's store does), and a folder it names that does not exist is not made
    (`sqlite:///nonexistent/dir/x.db` would make `/nonexistent` at the root)."""
    missing = tmp_path / "typo" / "dir"
    args = ("ticket", "create", "--title", "t", "--agent", "echo")
    refused = swarm_inproc(home, *args, **{setting: f"sqlite://{missing}/x.db"})
    assert (refused.returncode, refused.stdout) == (6, "")
    assert refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1
    assert f"no folder {missing} (a typo in the URL?)" in refused.stderr
    assert not (tmp_path / "typo").exists()
    folder = tmp_path / "there"
    folder.mkdir()
    env = {"SWARM_REGISTRY_URL": f"sqlite://{home}/registry.db"}  # (not the store's file)
    env[setting] = f"sqlite://{folder}/x.db"
    made = swarm_inproc(home, *args, **env)
    assert made.returncode == 0, made.stderr
    what = "registry" if setting == "SWARM_REGISTRY_URL" else "store"
    assert made.stderr == f"note: created a new, empty {what} at {folder / 'x.db'}\n"
    again = swarm_inproc(home, *args, **env)
    assert (again.returncode, again.stderr) == (0, "")  # said once


def test_a_registry_at_the_ticket_stores_own_file_is_refused_in_one_line(
    home: Path, tmp_path: Path
) -> None:
    """`SWARM_REGISTRY_URL` (or `registry_url` in the config file) naming the ticket
    store's file, by any path to it, said `tickets.db has schema version 6, newer than this
    engine` (the store's schema read as the registry's): refused when settings load, exit 5,
    nothing written, a fresh home not made. The same for a `database_url` naming the
    registry's file."""
    store = home / "tickets.db"
    (tmp_path / "link.db").symlink_to(store)
    (tmp_path / "hard.db").hardlink_to(store)
    same = "the registry and the ticket store must be different databases\n"
    by_url = f"error: setting registry_url: names the ticket store's file {store}; {same}"
    before = snapshot(store), snapshot(home / "registry.db")
    args = ("ticket", "create", "--title", "t", "--agent", "echo")
    for env, line in (
        ({"SWARM_REGISTRY_URL": f"sqlite://{store}"}, by_url),
        ({"SWARM_REGISTRY_URL": f"sqlite:///{home}/../{home.name}/./tickets.db"}, by_url),
        ({"SWARM_REGISTRY_URL": f"sqlite://{tmp_path}/link.db"}, by_url),
        ({"SWARM_REGISTRY_URL": f"sqlite://{tmp_path}/hard.db"}, by_url),
        (
            {"SWARM_DATABASE_URL": f"sqlite://{home}/registry.db"},
            f"error: setting database_url: names the registry's file {home}/registry.db; {same}",
        ),
        (
            {"SWARM_REGISTRY_DB": str(tmp_path / "link.db")},
            f"error: setting registry_db: names the ticket store's file {store}; {same}",
        ),
    ):
        done = swarm_inproc(home, *args, **env)
        assert (done.returncode, done.stdout, done.stderr) == (5, "", line), env
        listed = swarm_inproc(home, "ticket", "list", **env)
        assert (listed.returncode, listed.stderr) == (5, line), env
    assert (snapshot(store), snapshot(home / "registry.db")) == before
    (home / "config.toml").write_text(f'registry_url = "sqlite://{store}"\n')
    done = swarm_inproc(home, *args)
    assert (done.returncode, done.stderr) == (5, by_url)
    (home / "config.toml").unlink()
    fresh = tmp_path / "fresh"
    done = swarm(fresh, *args, SWARM_REGISTRY_URL=f"sqlite://{fresh}/tickets.db")
    assert (done.returncode, done.stdout) == (5, "")
    assert done.stderr == (
        f"error: setting registry_url: names the ticket store's file {fresh}/tickets.db; {same}"
    )
    assert not fresh.exists()


def test_a_sqlite_database_url_alone_keeps_the_registry_in_its_own_file(
    home: Path, tmp_path: Path
) -> None:
    """A `sqlite:///` `database_url` names the ticket store's file; the registry stays the
    home's `registry.db` (both schemas in one SQLite file broke the second command)."""
    env = {"SWARM_DATABASE_URL": f"sqlite:///{tmp_path}/store.db"}  # sqlite:////abs: fine too
    for title in ("one", "two"):
        made = swarm_inproc(home, "ticket", "create", "--title", title, "--agent", "echo", **env)
        assert made.returncode == 0, made.stderr
    assert made.stderr == ""
    done = swarm_inproc(home, "run-ticket", "2", "--wait", **env)
    assert done.returncode == 0, done.stderr
    assert (home / "registry.db").exists()
    assert [r["title"] for r in query(tmp_path / "store.db", "SELECT title FROM tickets")] == [
        "one",
        "two",
    ]
