"""Rows can make the reaper reap less, never more: a VM whose processes are the live work
of a live engine process is never killed nor deleted, whatever its `vms` or `engines` row
says (real engine processes, real sandboxes)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tests.acceptance.conftest import engine_ready, status_of, stop, write_agent
from tests.support.cli import env_for, query, sqlite_shell, start_engine, swarm, wait_until

from swarm_engine.config import hostname
from swarm_engine.vm.proctree import tagged

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5", "SWARM_LEASE_TTL": "2"}
WAITER = "name: waiter\nkind: shell\ncommand: until [ -e go ]; do sleep 0.05; done\n"
"""Runs until the test puts a file `go` in its workspace: as long as the test needs."""


def running_vm(home: Path) -> dict[str, str]:
    """The VM of the one running step, once a process of its sandbox runs."""
    db = home / "tickets.db"
    step = wait_until(
        lambda: query(db, "SELECT * FROM step_executions WHERE status = 'running'"),
        30,
        "the step to run",
    )[0]
    wait_until(lambda: tagged(step["vm_id"]), 10, "the sandbox's process")
    return query(db, "SELECT * FROM vms WHERE id = ?", step["vm_id"])[0]


def release(vm: dict[str, str]) -> None:
    (Path(vm["workspace"]) / "go").write_text("")


def lines_of(proc: subprocess.Popen[str]) -> list[str]:
    """The lines `proc` writes, gathered as they come (by a thread)."""
    lines: list[str] = []
    assert proc.stdout is not None
    out = proc.stdout
    threading.Thread(target=lambda: lines.extend(out), daemon=True).start()
    return lines


@pytest.mark.parametrize("isolation", ["auto", "none"])
def test_the_daemons_reaper_spares_its_own_running_vm_whose_row_names_a_dead_engine(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]], isolation: str
) -> None:
    """One edit of a `vms` row (its engine: a dead one) made the daemon's reaper kill the
    sandbox of its own running ticket (exit 137). Its processes are the daemon's: left
    alone, with one line said, and the ticket ends `done`."""
    (home / "config.toml").write_text(f'[backend_options.process]\nisolation = "{isolation}"\n')
    db = home / "tickets.db"
    write_agent(tmp_path / "waiter", WAITER)
    swarm(home, "agent", "register", str(tmp_path / "waiter"), check=True)
    proc = start_engine(home, **FAST)
    engines.append(proc)
    said = lines_of(proc)
    engine_ready(home, proc)
    swarm(home, "ticket", "create", "--title", "w", "--agent", "waiter", check=True)
    vm = running_vm(home)
    sqlite_shell(db, "INSERT INTO engines (id, host, pid, max_vms, backend, heartbeat_at, state)"
                     f" VALUES ('ghost', '{hostname()}', 999999, 1, 'process',"
                     " '2000-01-01T00:00:00Z', 'dead')")  # fmt: skip
    sqlite_shell(db, "UPDATE vms SET engine_id = 'ghost' WHERE state = 'busy'")
    line = wait_until(
        lambda: [s for s in said if vm["id"] in s and "reap" in s],
        30,
        "the reaper to look at the VM",
    )[0]
    assert f"left as it is: its folder's owner is engine process {proc.pid}" in line, line
    assert tagged(vm["id"]) and Path(vm["workspace"]).is_dir()
    assert query(db, "SELECT state FROM vms WHERE id = ?", vm["id"])[0]["state"] == "busy"
    release(vm)
    wait_until(lambda: status_of(home, 1) != "running", 30, "the ticket to end")
    assert status_of(home, 1) == "done"
    stop(proc)
    assert not any("VMs reaped" in s for s in said), said


@pytest.mark.parametrize("isolation", ["auto", "none"])
def test_cleanup_spares_the_running_vm_of_a_run_ticket_whose_engine_row_looks_dead(
    home: Path, tmp_path: Path, isolation: str
) -> None:
    """`run-ticket --wait` runs; its `engines` row is edited (a pid no process has, an old
    heartbeat): `cleanup` reaped its VM (exit 137). Its sandbox's processes are a live
    run-ticket's: nothing of it is reaped, and the ticket ends `done`."""
    (home / "config.toml").write_text(f'[backend_options.process]\nisolation = "{isolation}"\n')
    db = home / "tickets.db"
    write_agent(tmp_path / "waiter", WAITER)
    swarm(home, "agent", "register", str(tmp_path / "waiter"), check=True)
    swarm(home, "ticket", "create", "--title", "w", "--agent", "waiter", check=True)
    proc = subprocess.Popen([sys.executable, "-m", "swarm_engine", "run-ticket", "1", "--wait"],
                            env=env_for(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        vm = running_vm(home)
        sqlite_shell(db, "UPDATE engines SET pid = 999999, heartbeat_at = '2020-01-01T00:00:00Z'")
        done = swarm(home, "cleanup", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["vms"] == [], done.stdout
        assert (
            f"VM {vm['id']}: left as it is: its folder's owner is engine process {proc.pid}"
            in done.stderr
        ), done.stderr
        assert tagged(vm["id"]) and Path(vm["workspace"]).is_dir()
        assert query(db, "SELECT state FROM vms WHERE id = ?", vm["id"])[0]["state"] == "busy"
        release(vm)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert status_of(home, 1) == "done"
    assert query(db, "SELECT state FROM vms WHERE id = ?", vm["id"])[0]["state"] == "destroyed"
