"""Stopping an engine: the second stop aborts, and what it aborts is re-queued, or said to
be left to the lease reclaim when the store stays busy until the leases run out."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.acceptance.conftest import engine_ready, status_of, write_agent
from tests.support.api import start_api
from tests.support.cli import (
    env_for,
    query,
    sqlite_shell,
    start_engine,
    swarm,
    swarm_inproc,
    wait_until,
    write_lock,
)
from tests.support.sigmask import catches, ignores

BUSY = {
    "SWARM_BUSY_TIMEOUT": "0.2",
    "SWARM_HEARTBEAT_INTERVAL": "0.3",
    "SWARM_POLL_INTERVAL": "0.5",
}


def long_ticket(home: Path, tmp_path: Path) -> None:
    write_agent(tmp_path / "long", "name: long\nkind: shell\ncommand: sleep 300\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "long")).returncode == 0
    assert swarm_inproc(home, "ticket", "create", "--title", "l", "--agent", "long").returncode == 0


def draining(home: Path, proc: subprocess.Popen[str]) -> None:
    """Send the first stop and wait until the engine records that it drains."""
    proc.send_signal(signal.SIGTERM)
    sql = "SELECT 1 FROM engines WHERE pid = ? AND state = 'draining'"
    wait_until(lambda: query(home / "tickets.db", sql, proc.pid), 20, "the engine to drain")


def running_engine(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]], **env: str
) -> subprocess.Popen[str]:
    long_ticket(home, tmp_path)
    proc = start_engine(home, "--max-vms", "1", **env)
    engines.append(proc)
    engine_ready(home, proc)
    wait_until(
        lambda: query(
            home / "tickets.db", "SELECT 1 FROM step_executions WHERE status = 'running'"
        ),
        30,
        "the step to run",
    )
    return proc


def test_a_second_stop_while_the_store_is_locked_requeues_once_the_store_answers(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    proc = running_engine(home, tmp_path, engines, **BUSY, SWARM_LEASE_TTL="30")
    draining(home, proc)
    with write_lock(db):
        proc.send_signal(signal.SIGTERM)  # abort, while another writer holds the lock
        time.sleep(1.5)  # sleep-ok: several busy timeouts of the lock are the fault under test
        assert proc.poll() is None, "the engine waits for the store to record the abort"
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    (ticket,) = query(db, "SELECT status, attempts, engine_id FROM tickets")
    assert ticket["status"] == "open" and ticket["attempts"] == 1, (ticket, out)
    (run,) = query(db, "SELECT status, error FROM workflow_runs")
    assert run["status"] == "failed" and run["error"].startswith("aborted"), run
    assert "aborting 1 running ticket" in out
    assert "lease" not in out.lower() and "Traceback" not in out, out


def test_a_second_stop_while_the_store_stays_locked_past_the_lease_names_the_tickets_left(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    db = home / "tickets.db"
    proc = running_engine(home, tmp_path, engines, **BUSY, SWARM_LEASE_TTL="2")
    draining(home, proc)
    with write_lock(db):
        proc.send_signal(signal.SIGTERM)  # abort; the lock outlasts the lease
        out, _ = proc.communicate(timeout=60)  # the engine does not wait forever
        assert status_of(home, 1) == "running"  # a read: nothing could be written
    assert proc.returncode == 6, out  # records lost: not a clean stop
    said = [line for line in out.splitlines() if "ticket(s) 1 " in line]
    assert len(said) == 1, out
    assert re.search(r"re-queue", said[0]) and "lease" in said[0], said
    assert "swarm-engine cleanup" in said[0], said
    assert "Traceback" not in out, out

    # as it says: the expired lease is reclaimed by cleanup (or any engine)
    def cleaned() -> bool:
        assert swarm_inproc(home, "cleanup").returncode == 0
        return status_of(home, 1) == "open"

    wait_until(cleaned, 30, "cleanup to re-queue the ticket")
    (run,) = query(db, "SELECT status, error FROM workflow_runs")
    assert run["status"] == "failed" and "lease expired" in run["error"], run


def test_aborts_of_many_tickets_under_a_held_lock_end_within_the_lease_not_in_turn(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """Each abort write used to wait out a whole busy timeout, one after another on the
    store thread: (tickets + 2) x busy_timeout. From the abort on, a call waits only until
    one lease_ttl after it, so the engine exits with the lock still held, well before
    the old serial waits (6 x 4 s here) could have ended."""
    db = home / "tickets.db"
    write_agent(tmp_path / "long", "name: long\nkind: shell\ncommand: sleep 300\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "long")).returncode == 0
    for i in range(4):
        made = swarm_inproc(home, "ticket", "create", "--title", f"l{i}", "--agent", "long")
        assert made.returncode == 0
    env = {"SWARM_BUSY_TIMEOUT": "4", "SWARM_LEASE_TTL": "4", "SWARM_HEARTBEAT_INTERVAL": "0.5"}
    proc = start_engine(home, "--max-vms", "4", **env)
    engines.append(proc)
    engine_ready(home, proc)
    running = "SELECT count(*) AS n FROM step_executions WHERE status = 'running'"
    wait_until(lambda: query(db, running)[0]["n"] == 4, 60, "four steps to run")
    draining(home, proc)
    with write_lock(db):
        proc.send_signal(signal.SIGTERM)  # abort; the lock outlasts the lease
        # bound: one lease_ttl, or one busy timeout already waiting (+ teardown slack)
        out, _ = proc.communicate(timeout=4 + 3 * 4)
        assert status_of(home, 1) == "running"  # a read: nothing could be written
    assert proc.returncode == 6, out  # records lost: not a clean stop
    said = [line for line in out.splitlines() if "left leased to it" in line]
    assert len(said) == 1 and all(str(t) in said[0] for t in (1, 2, 3, 4)), out
    for ticket in (1, 2, 3, 4):  # one true line per ticket, not "aborted" after "not recorded"
        about = [line for line in out.splitlines() if f"ticket {ticket} aborted" in line]
        assert len(about) == 1 and "not recorded" in about[0], out
    # the abort's lines say what happens; the lease keeper adds no line per ticket
    assert "lease ran out" not in out, out
    # its end unrecorded, its row says draining: status judges it by its process, once its
    # heartbeat is older than lease_ttl too (moved back here instead of waiting)
    sqlite_shell(db, "UPDATE engines SET heartbeat_at = '2000-01-01T00:00:00Z'")
    (engine,) = json.loads(swarm_inproc(home, "status", "--json").stdout)["engines"]
    assert engine["state"] == "dead" and engine["recorded_state"] == "draining", engine

    def cleaned() -> bool:
        assert swarm_inproc(home, "cleanup").returncode == 0
        return all(status_of(home, t) == "open" for t in (1, 2, 3, 4))

    wait_until(cleaned, 30, "cleanup to re-queue the tickets")


def test_a_second_stop_says_that_it_aborts(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    proc = running_engine(home, tmp_path, engines, **BUSY)
    first = swarm(home, "stop", "--no-wait")
    assert first.returncode == 0 and first.stdout.startswith(f"draining 1 engine(s): [{proc.pid}]")
    assert "again aborts" in first.stdout, first.stdout
    second = swarm(home, "stop", "--timeout", "60")
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith(f"aborting the running tickets of 1 engine(s): [{proc.pid}]")
    assert "draining" not in second.stdout and second.stdout.rstrip().endswith("stopped")
    assert status_of(home, 1) == "open"  # aborted: back in the queue
    out, _ = proc.communicate(timeout=60)
    assert "aborting 1 running ticket" in out, out


def test_stop_that_times_out_says_what_each_engine_still_does(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    proc = running_engine(home, tmp_path, engines, **BUSY, SWARM_LEASE_TTL="30")
    first = swarm(home, "stop", "--timeout", "0.5")  # drains: the ticket sleeps on
    assert first.returncode == 1, first
    assert first.stderr.startswith(f"error: engines still running after 0.5s: [{proc.pid}]")
    assert "still draining" in first.stderr and "'swarm-engine stop' again aborts" in first.stderr
    with write_lock(home / "tickets.db"):  # the abort waits for the store to record it
        second = swarm(home, "stop", "--timeout", "0.5")
    assert second.returncode == 1, second
    said = " ".join(second.stderr.split())
    assert f"[{proc.pid}] still aborting" in said and "another stop changes nothing" in said
    assert "--now" not in said and "kill -9" in said, said
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and status_of(home, 1) == "open", out


def interrupted_run_ticket(
    home: Path,
    ready: Callable[[subprocess.Popen[str]], None],
    sig: signal.Signals = signal.SIGINT,
    **env: str,
) -> tuple[int, str, str]:
    """`run-ticket 1 --wait`, sent `sig` once `ready(proc)` returns: its exit code,
    stdout and stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", "run-ticket", "1", "--wait"],
        env=env_for(home, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        ready(proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


@pytest.mark.parametrize(
    ("sig", "how"),
    [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGHUP")],
)
def test_ctrl_c_on_run_ticket_wait_fails_the_ticket_and_says_how_to_run_it_again(
    home: Path, tmp_path: Path, sig: signal.Signals, how: str
) -> None:
    """Ctrl-C stops a ticket run in this process: recorded failed, not re-queued (no
    engine picks it up behind the user's back), with the way to run it again. So do
    SIGTERM and SIGHUP (its terminal closed: that left the ticket `running`, its
    engine's row `running` and its VMs' helpers alive, exit 129 without a word), each
    named in the ticket's error."""
    db = home / "tickets.db"
    long_ticket(home, tmp_path)
    steps: list[dict[str, Any]] = []

    def step_runs(proc: subprocess.Popen[str]) -> None:
        steps.extend(
            wait_until(
                lambda: query(db, "SELECT * FROM step_executions WHERE status = 'running'"),
                30,
                "the step to run",
            )
        )

    code, out, err = interrupted_run_ticket(home, step_runs, sig)
    step = steps[0]
    assert code == 130, (out, err)
    assert err.strip() == (
        "ticket 1 failed: interrupted; 'swarm-engine ticket reopen 1' queues it again"
    ), err  # one line: no "error: aborted" after it
    (ticket,) = query(db, "SELECT status, error FROM tickets")
    assert ticket["status"] == "failed" and ticket["error"].startswith(
        f"interrupted: run-ticket --wait was stopped ({how})"
    ), ticket
    assert query(db, "SELECT state FROM vms WHERE id = ?", step["vm_id"])[0]["state"] == "destroyed"
    assert query(db, "SELECT state FROM engines")[0]["state"] == "stopped"
    helped = swarm(home, "run-ticket", "--help").stdout
    assert "Ctrl-C" in helped and "ticket reopen" in helped, helped


@pytest.mark.skipif(shutil.which("nohup") is None, reason="no nohup command")
def test_run_ticket_wait_under_nohup_outlives_its_terminal(home: Path, tmp_path: Path) -> None:
    """`nohup run-ticket ID --wait`: SIGHUP (its terminal closed) stays ignored while the
    ticket runs (its loop put a handler in for it, and a closed terminal failed the
    ticket); SIGTERM still stops it. Read from the kernel while the step runs."""
    db = home / "tickets.db"
    long_ticket(home, tmp_path)
    nohup = shutil.which("nohup")
    assert nohup is not None
    proc = subprocess.Popen(
        [nohup, sys.executable, "-m", "swarm_engine", "run-ticket", "1", "--wait"],
        env=env_for(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        running = "SELECT 1 FROM step_executions WHERE status = 'running'"
        wait_until(lambda: query(db, running), 30, "the step to run")
        handled = [catches(proc.pid, s) for s in (signal.SIGINT, signal.SIGTERM)]
        assert (ignores(proc.pid, signal.SIGHUP), handled) == (True, [True, True])
        proc.send_signal(signal.SIGHUP)  # (dropped by the kernel: it is ignored)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (out, err)
    (ticket,) = query(db, "SELECT status, error FROM tickets")
    assert ticket["error"].startswith("interrupted: run-ticket --wait was stopped (SIGTERM)")


def test_ctrl_c_on_run_ticket_wait_before_the_claim_says_the_ticket_is_untouched(
    home: Path, tmp_path: Path
) -> None:
    long_ticket(home, tmp_path)

    def waits_on_the_lock(proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the gate's warning: it waits on the lock
        assert "store busy" in first, first

    with write_lock(home / "tickets.db"):  # its engine row cannot be written: no claim yet
        code, out, err = interrupted_run_ticket(home, waits_on_the_lock, **BUSY)
    assert code == 130, (out, err)
    assert err.strip() == (
        "interrupted before ticket 1 was claimed: it is left as it was, not run"
    ), err
    assert status_of(home, 1) == "open"


def test_run_ticket_says_when_the_engine_holding_the_ticket_is_not_running(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    proc = running_engine(home, tmp_path, engines, **BUSY)
    (engine,) = query(home / "tickets.db", "SELECT id FROM engines")
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9: it records nothing
    proc.wait()
    gone = (
        f"by engine {engine['id']}, which is not running (its process {proc.pid} on this"
        " host is gone); it will be re-queued when its lease expires (in "
    )
    queued = swarm_inproc(home, "run-ticket", "1")
    said = " ".join(queued.stdout.split())  # (as wide as the terminal)
    assert queued.returncode == 0 and said.startswith(f"ticket 1 is running {gone}"), said
    assert said.endswith("by any running engine or 'swarm-engine cleanup'"), said
    waited = swarm_inproc(home, "run-ticket", "1", "--wait")
    assert waited.returncode == 4, waited.stderr
    assert waited.stderr.startswith(f"error: ticket 1 is already running {gone}"), waited.stderr
    assert status_of(home, 1) == "running"  # both only said so
    # and status agrees once its heartbeat is older than lease_ttl too (moved back here):
    # its process on this host is gone (a live engine's heartbeat keeps it alive)
    (alive,) = json.loads(swarm_inproc(home, "status", "--json").stdout)["engines"]
    assert alive["state"] == "running", alive
    sqlite_shell(home / "tickets.db", "UPDATE engines SET heartbeat_at = '2000-01-01T00:00:00Z'")
    (shown,) = json.loads(swarm_inproc(home, "status", "--json").stdout)["engines"]
    assert shown["state"] == "dead" and shown["recorded_state"] == "running", shown
    text = " ".join(swarm_inproc(home, "status").stdout.split())
    assert f"its process {proc.pid} on this host is gone (its row says running)" in text, text


def kill_group(proc: subprocess.Popen[str]) -> None:
    """`kill -9` of a process started in its own session, and everything it started,
    if it still runs (a test's cleanup)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def take_away(db: Path, how: str) -> None:
    """Make the name `db` stop naming its file: `replaced` by a copy moved over it (as a
    restore does), or `deleted`."""
    if how == "replaced":
        copy = db.with_name("copy.db")
        with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        os.replace(copy, db)
    elif how == "linked":  # moved away, a symlink to it in its place: SQLite would keep
        # a second -wal next to the new name. Done without a moment where the name is
        # gone (which the engine, looking then, rightly calls deleted): a second name for
        # the file, then a symlink to it renamed over the first
        os.link(db, db.with_name("real.db"))
        link = db.with_name("link.tmp")
        link.symlink_to("real.db")
        os.replace(link, db)
    else:
        db.unlink()


SAID = {
    "replaced": "replaced by another file",
    "deleted": "deleted",
    "linked": "moved, its name now a link to it",
}


@pytest.mark.parametrize("how", ["replaced", "deleted", "linked"])
def test_an_engine_whose_store_file_goes_stops_saying_so(home: Path, how: str) -> None:
    """A SQLite store's name that stops naming the engine's file (`mv` of another file
    over it, `rm`) stops the engine with one line: it would go on in a file nobody else
    sees, while another engine ran the new file's tickets."""
    db = home / "tickets.db"
    swarm(home, "ticket", "create", "--title", "t", "--agent", "shell",
          "--input", "command=sleep 30", check=True)  # fmt: skip
    engine = start_engine(home, SWARM_HEARTBEAT_INTERVAL="0.3")
    try:
        wait_until(lambda: query(db, "SELECT status FROM tickets")[0]["status"] == "running",
                   30, "the ticket to run")  # fmt: skip
        take_away(db, how)
        out, _ = engine.communicate(timeout=60)
    finally:
        kill_group(engine)
    assert engine.returncode != 0
    want = SAID[how]
    assert f"engine stopped: the store {db} was {want} while in use" in out, out


ROWS = (
    "SELECT 'ticket', id, status, attempts, attempt_id FROM tickets UNION ALL"
    " SELECT 'run', id, status, ticket_id, attempt_id FROM workflow_runs UNION ALL"
    " SELECT 'event', id, new_status, ticket_id, attempt_id FROM ticket_events ORDER BY 1, 2"
)


def restore_by_mv(db: Path) -> list[dict[str, Any]]:
    """`mv` a backup of `db` over it (as restoring a backup by copying does); the rows
    the backup holds."""
    copy = db.with_name("backup.db")
    with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    rows = query(copy, ROWS)
    os.replace(copy, db)
    return rows


def test_a_store_replaced_under_a_busy_engine_gets_no_write_of_it(home: Path) -> None:
    """A backup moved over the store while the engine runs a ticket and another waits: the
    engine stops before it writes anything into the new file (it had claimed and run its
    own ticket again in it, and failed others on foreign keys), whatever it was doing."""
    db = home / "tickets.db"
    swarm(home, "ticket", "create", "--title", "long", "--agent", "shell",
          "--input", "command=sleep 30", check=True)  # fmt: skip
    swarm(home, "ticket", "create", "--title", "next", "--agent", "echo", check=True)
    engine = start_engine(home, "--max-vms", "1", SWARM_HEARTBEAT_INTERVAL="0.5")
    try:
        wait_until(lambda: query(db, "SELECT status FROM tickets WHERE id = 1")[0]["status"]
                   == "running", 30, "the first ticket to run")  # fmt: skip
        restored = restore_by_mv(db)
        out, _ = engine.communicate(timeout=60)
    finally:
        kill_group(engine)
    assert engine.returncode == 1, out
    assert f"engine stopped: the store {db} was replaced by another file while in use" in out
    assert query(db, ROWS) == restored  # not one row written into the restored file


def test_run_ticket_stops_when_its_store_is_replaced(home: Path) -> None:
    """`run-ticket --wait` ran its ticket to the end in the replaced file and said done,
    while the new file kept it `running` for the next engine to run again: it now stops
    at once with one line (exit 6), the new file untouched."""
    db = home / "tickets.db"
    swarm(home, "ticket", "create", "--title", "long", "--agent", "shell",
          "--input", "command=sleep 30", check=True)  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", "run-ticket", "1", "--wait"],
        env=env_for(home, SWARM_HEARTBEAT_INTERVAL="0.5"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: query(db, "SELECT status FROM tickets")[0]["status"] == "running",
                   30, "the ticket to run")  # fmt: skip
        restored = restore_by_mv(db)
        out, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == 6, (out, err)
    assert err.splitlines()[-1] == (
        f"error: run-ticket stopped: the store {db} was replaced by another file while in use"
    ), err
    assert "done" not in out
    assert query(db, ROWS) == restored


def test_an_engine_whose_registry_file_goes_stops_without_failing_tickets(
    home: Path, tmp_path: Path
) -> None:
    """The registry deleted and made again (`rm registry.db*`, then `agent register`)
    while an engine runs: its tickets failed as "unknown agent" although `agent list`
    showed the agent. The engine now stops with one line naming the registry, and the
    ticket is not failed for it."""
    swarm(home, "status", "--init", check=True)
    engine = start_engine(home, SWARM_HEARTBEAT_INTERVAL="0.5")
    try:
        engine_ready(home, engine)
        for name in ("registry.db", "registry.db-wal", "registry.db-shm"):
            (home / name).unlink(missing_ok=True)
        folder = write_agent(tmp_path / "newbie", "name: newbie\nkind: shell\ncommand: echo hi\n")
        swarm(home, "agent", "register", str(folder), check=True)
        swarm(home, "ticket", "create", "--title", "n", "--agent", "newbie", check=True)
        out, _ = engine.communicate(timeout=60)
    finally:
        kill_group(engine)
    registry = home / "registry.db"
    assert engine.returncode == 1, out
    gone = "(deleted|replaced by another file)"  # as the engine found it (a race)
    assert re.search(f"engine stopped: the registry {re.escape(str(registry))} was {gone}"
                     " while in use", out), out  # fmt: skip
    assert status_of(home, 1) in ("open", "claimed")  # not failed: no fault of the ticket's


def test_an_engine_started_with_interpreter_options_is_stopped(
    home: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """`python -u -X utf8 -m swarm_engine start` was not seen as an engine (only argv[:3]
    was looked at): `stop` said none ran, a second `start` that the lock holder was "not
    an engine of this user"."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-X", "utf8", "-m", "swarm_engine", "start", "--foreground"],
        env=env_for(home, **BUSY), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    engines.append(proc)
    engine_ready(home, proc)
    second = swarm(home, "start")
    assert second.returncode == 4, second.stderr
    assert f"(pid {proc.pid})" in second.stderr and "not an engine" not in second.stderr
    stopped = swarm(home, "stop", "--timeout", "60")
    assert stopped.returncode == 0 and stopped.stdout.rstrip().endswith("stopped"), stopped
    assert proc.wait(timeout=60) == 0


@pytest.mark.parametrize("how", ["pid=1", "host='other'", "namespace"])
def test_stop_finds_the_engine_holding_the_lock_whatever_its_row_says(
    home: Path, engines: list[subprocess.Popen[str]], how: str
) -> None:
    """`stop` took its targets from `engines` rows only: with a running engine's row
    edited, or an engine in another pid namespace (its row's pid is that namespace's),
    it said "no engine is running on this host" while `start` said the lock was held."""
    argv = [sys.executable, "-m", "swarm_engine", "start", "--foreground"]
    if how == "namespace":
        probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                               capture_output=True)  # fmt: skip
        if probe.returncode != 0:
            pytest.skip("no pid namespaces here")
        argv = ["unshare", "--pid", "--fork", "--mount-proc", *argv]
    proc = subprocess.Popen(argv, env=env_for(home, **BUSY), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    engines.append(proc)
    db = home / "tickets.db"
    wait_until(lambda: query(db, "SELECT 1 FROM engines WHERE state = 'running'"), 30, "engine")
    if how != "namespace":
        sqlite_shell(db, f"UPDATE engines SET {how}")
    stopped = swarm(home, "stop", "--timeout", "60")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("draining 1 engine(s)"), stopped.stdout
    assert stopped.stdout.rstrip().endswith("stopped"), stopped.stdout
    assert proc.wait(timeout=60) == 0


@pytest.mark.parametrize("how", ["replaced", "deleted"])
@pytest.mark.parametrize("asked", [True, False], ids=["asked", "idle"])
def test_a_server_whose_store_file_goes_stops_saying_so(home: Path, how: str, asked: bool) -> None:
    """`serve` as the engine: once its store's name no longer names the file it opened, a
    request gets 503 saying so (not rows of the old file, nor of a new empty store that a
    fresh connection would make), and the server stops with one line; an idle server too,
    within a heartbeat."""
    db = home / "tickets.db"
    swarm(home, "ticket", "create", "--title", "t", "--agent", "echo", check=True)
    api = start_api(home, SWARM_HEARTBEAT_INTERVAL="0.3" if not asked else "10")
    try:
        assert [t["title"] for t in api.get("/v1/tickets").json()["items"]] == ["t"]
        take_away(db, how)
        want = "replaced by another file" if how == "replaced" else "deleted"
        said = f"the store {db} was {want} while in use"
        if asked:
            answer = api.get("/v1/tickets")
            assert answer.status_code == 503, answer.text
            assert answer.json()["message"] == said
        api.proc.wait(timeout=60)
    finally:
        err = api.stop()
    assert api.proc.returncode == 1, err
    assert f"error: API stopped: {said}\n" in err, err
    assert how == "replaced" or not db.exists()  # no empty store made in its place


@pytest.mark.parametrize("how", ["replaced", "deleted"])
@pytest.mark.parametrize("asked", [True, False], ids=["asked", "idle"])
def test_a_server_whose_registry_file_goes_stops_saying_so(
    home: Path, how: str, asked: bool
) -> None:
    """`serve` as the engine, for the registry too: once `registry.db` no longer names the
    file it opened (a restore moved over it, `rm`), a request that reads the registry gets
    503 saying so (not the old file's agents, nor an empty registry made in its place),
    and the server stops with one line; an idle server too, within a heartbeat."""
    reg = home / "registry.db"
    swarm(home, "status", "--init", check=True)
    api = start_api(home, SWARM_HEARTBEAT_INTERVAL="0.3" if not asked else "10")
    try:
        assert "echo" in [a["name"] for a in api.get("/v1/agents").json()]
        take_away(reg, how)
        want = "replaced by another file" if how == "replaced" else "deleted"
        said = f"the registry {reg} was {want} while in use"
        if asked:
            answer = api.get("/v1/agents")
            assert answer.status_code == 503, answer.text
            assert answer.json()["message"] == said
        api.proc.wait(timeout=60)
    finally:
        err = api.stop()
    assert api.proc.returncode == 1, err
    assert f"error: API stopped: {said}\n" in err, err
    assert how == "replaced" or not reg.exists()  # no empty registry made in its place


def test_stop_now_counts_an_engine_gone_after_its_first_signal_as_stopped(
    home: Path, engines: list[subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stop --now` signals twice, 0.1 s apart; an idle engine may exit on the first, so
    the second found no process (a `ProcessLookupError` traceback). Here the pause waits
    until the real engine has exited on the first signal and is reaped."""
    from swarm_engine.cli import stop as stop_cmd

    proc = start_engine(home)
    engines.append(proc)
    engine_ready(home, proc)
    pause = time.sleep

    def until_gone(seconds: float) -> None:
        proc.wait(timeout=60)  # exited on the first SIGTERM, and reaped: its pid is free
        pause(seconds)

    # (only `stop`'s own clock: `proc.wait` sleeps with the real one)
    monkeypatch.setattr(
        stop_cmd, "time", SimpleNamespace(sleep=until_gone, monotonic=time.monotonic)
    )
    done = swarm_inproc(home, "stop", "--now", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and done.stdout.rstrip().endswith("stopped")
    assert proc.returncode is not None
