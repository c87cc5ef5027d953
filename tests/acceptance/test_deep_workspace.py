"""A step's folder chain deeper than Python's recursion limit (1,200 `mkdir a && cd a`, a
2.4 KB path: within every limit) is counted and deleted like any other tree. Before,
`os.walk` and `shutil.rmtree` raised RecursionError: in `disk_cap = "measured"` the disk
watcher stopped without a word and the command ran uncapped; the VM folder was left, and
`cleanup` (and every later `start`, which reaps first) died with a traceback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.support.cli import query, swarm, swarm_inproc

from swarm_engine.vm import workspace
from swarm_engine.vm.process import bwrap_problem
from swarm_engine.vm.workspace import disk_usage, remove_folder

DEPTH = 1200
CHAIN = f"i=0; while [ $i -lt {DEPTH} ]; do mkdir a && cd a || exit 9; i=$((i+1)); done"


def make_chain(root: Path, depth: int = DEPTH) -> Path:
    """`root/a/a/.../a`, `depth` folders deep, made one `mkdir` at a time."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("a", dir_fd=fd)
            inner = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    return root


def test_a_deep_chain_is_counted_whole(tmp_path: Path) -> None:
    folder = tmp_path / "vm-deep"
    folder.mkdir()
    make_chain(folder)
    try:
        assert disk_usage(folder, 1 << 40, 1 << 30)[1] == DEPTH + 1  # before: RecursionError
    finally:  # (pytest's own clean-up of old tmp folders recurses too)
        remove_folder(folder)


def test_a_deep_chain_is_deleted(tmp_path: Path) -> None:
    folder = tmp_path / "vm-deep"
    folder.mkdir()
    make_chain(folder)
    assert remove_folder(folder) is None and not folder.exists()  # before: RecursionError


def test_remove_folder_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever goes wrong, the folder is left and one line says so: destroy, reap,
    cleanup and start go on."""

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("broken on purpose")

    (tmp_path / "vm-deep").mkdir()
    monkeypatch.setattr(workspace.shutil, "rmtree", broken)
    left = remove_folder(tmp_path / "vm-deep")
    assert left is not None and "broken on purpose" in left and "\n" not in left


needs_bwrap = pytest.mark.skipif(bwrap_problem() is not None, reason=f"{bwrap_problem()}")


def measured(home: Path, tmp_path: Path, command: str) -> dict[str, object]:
    (home / "config.toml").write_text(
        '[backend_options.process]\ndisk_mb = 16\nmax_files = 20000\ndisk_cap = "measured"\n'
    )
    write_agent(tmp_path / "s", f"name: s\nkind: shell\ncommand: {json.dumps(command)}\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "s")).returncode == 0
    assert swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "s").returncode == 0
    done = swarm(home, "run-ticket", "1", "--wait", "--json", timeout=90)
    return dict(json.loads(done.stdout), returncode=done.returncode)


@needs_bwrap
def test_a_deep_chain_does_not_lift_the_measured_cap(home: Path, tmp_path: Path) -> None:
    """Files past disk_mb (each under the per-file limit), written after the chain: the
    command is killed naming the limit (before: done, 485 MB held in a 64 MiB workspace)."""
    writes = "; ".join(
        f"dd if=/dev/zero of=/workspace/big{n} bs=1M count=6 status=none" for n in range(6)
    )
    command = f"{CHAIN}; cd /workspace; sleep 0.5; {writes}; sleep 3; rm -rf a big*; echo ok"
    out = measured(home, tmp_path, command)  # (gone before the end: the watcher's to see)
    assert out["status"] == "failed", out
    assert "went over its disk limit of 16 MiB or 20000 files" in str(out["error"]), out


@needs_bwrap
def test_a_deep_chain_left_behind_is_deleted_and_cleanup_survives_one(
    home: Path, tmp_path: Path
) -> None:
    out = measured(home, tmp_path, f"{CHAIN}; echo ok")
    assert out["status"] == "done", out  # the VM's destroy deleted the chain with it
    assert list((home / "vms").iterdir()) == []
    (row,) = query(home / "tickets.db", "SELECT id, state FROM vms")
    assert row["state"] == "destroyed", row
    vm_id = str(row["id"])
    left = home / "vms" / vm_id  # as an engine killed during the destroy leaves it
    left.mkdir()
    make_chain(left)
    done = swarm(home, "cleanup")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert not left.exists()
    shutil.rmtree(home / "vms", ignore_errors=True)
