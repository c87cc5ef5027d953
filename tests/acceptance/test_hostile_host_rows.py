"""Rows that point the engine at the host: an `engines.pid` that is not a swarm-engine
process, a `vms.id` that is a path, a `vms.socket_path` that is any file. `stop`,
`start` and `cleanup` act on what is the engine's own and nothing else: a row is any
writer's (docs/security.md)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from tests.acceptance.conftest import engine_ready, stop, write_agent
from tests.support.cli import query, sqlite_shell, start_engine, swarm, swarm_inproc, wait_until

HOST = os.uname().nodename


@pytest.fixture
def bystander() -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def test_stop_and_start_ignore_engine_rows_that_are_not_engines(
    home: Path, bystander: subprocess.Popen[bytes]
) -> None:
    db = home / "tickets.db"
    for n, pid in enumerate((bystander.pid, 0, -1, "'abc'", 1.5, 99999999999)):
        sqlite_shell(db, "INSERT INTO engines (id, kind, host, pid, max_vms, backend, state)"
                         f" VALUES ('fake{n}', 'daemon', '{HOST}', {pid}, 1, 'process',"
                         " 'running')")  # fmt: skip
    stopped = swarm(home, "stop", "--no-wait")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    first, *more = stopped.stdout.strip().splitlines()
    assert first == "no engine is running on this host", stopped.stdout
    # the five rows whose process this host does not show: said in one line, not signalled
    assert len(more) == 1 and more[0].startswith("5 engine rows of this host say running")
    assert bystander.poll() is None  # not signalled
    # nor do they keep an engine from starting ("already running")
    started = swarm(home, "start", "--foreground", "--until-idle")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "Traceback" not in started.stdout + started.stderr
    assert bystander.poll() is None


def test_stop_signals_this_homes_engines_only_and_each_once(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """Another home's engine on this host (its pid in this home's `engines` table) is not
    stopped, nor does it keep this home's engine from starting; this home's own engine,
    named by two rows, is sent one stop (a drain), not two (an abort)."""
    other = tmp_path / "other"
    assert swarm_inproc(other, "status", "--init").returncode == 0
    theirs = start_engine(other, "--max-vms", "1")
    engines.append(theirs)
    engine_ready(other, theirs)
    db = home / "tickets.db"
    sqlite_shell(db, "INSERT INTO engines (id, kind, host, pid, max_vms, backend, state)"
                     f" VALUES ('theirs', 'daemon', '{HOST}', {theirs.pid}, 1, 'process',"
                     " 'running')")  # fmt: skip
    assert swarm(home, "stop", "--no-wait").stdout.strip() == "no engine is running on this host"
    # a pid file this home's engine left when it was killed, its pid since reused
    stale = home / "run" / f"engine-{theirs.pid}.pid"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text(f"{theirs.pid}\n")
    os.utime(stale, (0, 0))  # written long before that process started
    assert swarm(home, "stop", "--no-wait").stdout.strip() == "no engine is running on this host"
    stale.unlink()
    mine = start_engine(home, "--max-vms", "1")  # not refused as "already running"
    engines.append(mine)
    engine_ready(home, mine)
    write_agent(tmp_path / "nap", "name: nap\nkind: shell\ncommand: sleep 2\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "nap")).returncode == 0
    assert swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "nap").returncode == 0
    wait_until(lambda: query(db, "SELECT 1 FROM tickets WHERE status = 'running'"), 30, "a run")
    sqlite_shell(db, "INSERT INTO engines (id, kind, host, pid, max_vms, backend, state)"
                     f" VALUES ('twice', 'daemon', '{HOST}', {mine.pid}, 1, 'process',"
                     " 'running')")  # fmt: skip
    stopped = swarm(home, "stop", "--timeout", "60")
    assert stopped.stdout.startswith(f"draining 1 engine(s): [{mine.pid}]"), stopped.stdout
    out = stop(mine)
    assert "aborting" not in out, out  # drained: its ticket ran to its end
    assert query(db, "SELECT status FROM tickets")[0]["status"] == "done"
    assert theirs.poll() is None  # the other home's engine runs on


def test_cleanup_never_follows_a_vm_row_out_of_its_folders(
    home: Path, tmp_path: Path, bystander: subprocess.Popen[bytes]
) -> None:
    victim = tmp_path / "victim"
    (victim / "inside").mkdir(parents=True)
    (victim / "owner.pid").write_text("1\n")  # as a qemu VM folder has
    # a bystander with "qemu" on its command line (its sleep is what it is, not a wait)
    qemuish = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", "qemu-notes.txt"],  # sleep-ok
        start_new_session=True,
    )
    short = Path(tempfile.gettempdir()) / f"swarm-qemu-{os.getuid()}"
    short.mkdir(mode=0o700, exist_ok=True)
    theirs = socket.socket(socket.AF_UNIX)  # another home's VM socket, in the shared folder
    theirs.bind(str(short / f"test-{os.getpid()}.sock"))
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(tmp_path / "other.sock"))  # a socket of someone else's
    (tmp_path / "file").write_text("keep me")
    db = home / "tickets.db"
    rows = [
        ("qemu", "vm-cccccccccccc", "NULL"),  # (pid and overlay set below)
        ("qemu", "vm-dddddddddddd", f"'{short / f'test-{os.getpid()}.sock'}'"),
        ("process", str(victim), "NULL"),
        ("process", "../../victim", "NULL"),
        ("process", "..", "NULL"),
        ("qemu", "vm-aaaaaaaaaaaa", f"'{tmp_path / 'file'}'"),
        ("qemu", "vm-bbbbbbbbbbbb", f"'{tmp_path / 'other.sock'}'"),
    ]
    for backend, vm_id, sock in rows:
        sqlite_shell(db, "INSERT INTO vms (id, backend, host, owner_pid, state, socket_path)"
                         f" VALUES ('{vm_id}', '{backend}', '{HOST}', 999999999, 'busy',"
                         f" {sock})")  # fmt: skip
    sqlite_shell(db, f"UPDATE vms SET pid = {qemuish.pid}, overlay_path = '{victim}'"
                     " WHERE id = 'vm-cccccccccccc'")  # fmt: skip
    done = swarm(home, "cleanup")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    alive = qemuish.poll() is None
    qemuish.kill()
    qemuish.wait()
    assert alive, "a process named in a row was killed"
    assert (short / f"test-{os.getpid()}.sock").exists()
    theirs.close()
    (short / f"test-{os.getpid()}.sock").unlink()
    assert (victim / "inside").is_dir()
    assert (tmp_path / "file").read_text() == "keep me"
    assert (tmp_path / "other.sock").exists()
    unix.close()
    left = query(db, "SELECT id, state, error FROM vms ORDER BY id")
    assert all(r["state"] in ("destroyed", "failed") for r in left), left
    refused = [r for r in left if r["error"] == "not a VM id: nothing reaped on the host"]
    assert {r["id"] for r in refused} == {str(victim), "../../victim", ".."}, left


def test_cleanup_leaves_another_homes_running_vm_alone(
    home: Path, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    """A row naming the id of a VM that another home's engine runs: this home has no
    folder of that id, so nothing is killed (its commands were found by the id alone)."""
    other = tmp_path / "other"
    assert swarm_inproc(other, "status", "--init").returncode == 0
    write_agent(tmp_path / "nap", "name: nap\nkind: shell\ncommand: sleep 3\n")
    assert swarm_inproc(other, "agent", "register", str(tmp_path / "nap")).returncode == 0
    assert swarm_inproc(other, "ticket", "create", "--title", "t", "--agent", "nap").returncode == 0
    theirs = start_engine(other, "--max-vms", "1")
    engines.append(theirs)
    busy = wait_until(
        lambda: query(other / "tickets.db", "SELECT id FROM vms WHERE state = 'busy'"), 30, "a VM"
    )
    sqlite_shell(home / "tickets.db", "INSERT INTO vms (id, backend, host, owner_pid, state)"
                 f" VALUES ('{busy[0]['id']}', 'process', '{HOST}', 999999999, 'busy')")  # fmt: skip
    assert swarm(home, "cleanup").returncode == 0
    wait_until(
        lambda: query(other / "tickets.db", "SELECT 1 FROM tickets WHERE status IN ('done', 'failed')"),
        60, "the other home's ticket to end",
    )  # fmt: skip
    ticket = query(other / "tickets.db", "SELECT status, error FROM tickets")[0]
    assert ticket["status"] == "done", ticket
    stop(theirs)
