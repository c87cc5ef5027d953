"""Rows that point the engine at the host: an `engines.pid` that is not a swarm-engine
process, a `vms.id` that is a path, a `vms.socket_path` that is any file. `stop`,
`start` and `cleanup` act on what is the engine's own and nothing else: a row is any
writer's (docs/security.md)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from tests.support.cli import query, sqlite_shell, swarm

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
    assert stopped.stdout.strip() == "no engine is running on this host", stopped.stdout
    assert bystander.poll() is None  # not signalled
    # nor do they keep an engine from starting ("already running")
    started = swarm(home, "start", "--foreground", "--until-idle")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "Traceback" not in started.stdout + started.stderr
    assert bystander.poll() is None


def test_cleanup_never_follows_a_vm_row_out_of_its_folders(home: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    (victim / "inside").mkdir(parents=True)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(tmp_path / "other.sock"))  # a socket of someone else's
    (tmp_path / "file").write_text("keep me")
    db = home / "tickets.db"
    rows = [
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
    done = swarm(home, "cleanup")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    assert (victim / "inside").is_dir()
    assert (tmp_path / "file").read_text() == "keep me"
    assert (tmp_path / "other.sock").exists()
    unix.close()
    left = query(db, "SELECT id, state, error FROM vms ORDER BY id")
    assert all(r["state"] in ("destroyed", "failed") for r in left), left
    refused = [r for r in left if r["error"] == "not a VM id: nothing reaped on the host"]
    assert {r["id"] for r in refused} == {str(victim), "../../victim", ".."}, left
