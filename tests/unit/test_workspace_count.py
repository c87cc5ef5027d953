"""A workspace's disk count fails closed: a folder the engine cannot list (a step's
`chmod 000`, seen by an engine that is not root) makes the limits uncheckable, and the
count says so instead of leaving that folder's files out."""

from __future__ import annotations

import ast
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from swarm_engine.vm.workspace import UncountableError, disk_usage

NOBODY = 65534


def as_user(uid: int, body: Callable[[], str]) -> str:
    """`body()` in a child process that runs as `uid` (when this one is root; as this
    process's own user otherwise): what it returned, or `ERROR <line>`."""
    if os.geteuid() != 0:
        try:
            return body()
        except UncountableError as exc:
            return f"ERROR {exc}"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to `uid`, count, report, exit without cleanup
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                out = body()
            except UncountableError as exc:
                out = f"ERROR {exc}"
            os.write(write, out.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A workspace owned by the user the count runs as (pytest's own tmp folders are
    private to root, so this one is made where that user can reach it)."""
    root = Path(tempfile.mkdtemp(prefix="swarm-count-"))
    os.chmod(root, 0o755)
    ws = root / "workspace"
    ws.mkdir()
    try:
        yield ws
    finally:
        for folder, _, _ in os.walk(root):
            os.chmod(folder, 0o755)
        shutil.rmtree(root)


def make(ws: Path, files: int, locked: bool) -> None:
    inner = ws / "a" / "locked"
    inner.mkdir(parents=True)
    for i in range(files):
        (inner / f"f{i}").write_bytes(b"x" * 100)
    if os.geteuid() == 0:
        for path in (ws, ws / "a", inner, *inner.iterdir()):
            os.chown(path, NOBODY, NOBODY)
    if locked:
        inner.chmod(0o000)


def test_a_folder_that_cannot_be_listed_makes_the_count_fail_closed(workspace: Path) -> None:
    make(workspace, files=50, locked=True)
    out = as_user(NOBODY, lambda: repr(disk_usage(workspace, 1 << 30, 10)))
    # before: (0, 2) -- the 50 files inside were never seen, and 10 files was no limit
    assert out == "ERROR a/locked: Permission denied", out


def test_the_same_folder_listable_is_counted_with_what_it_holds(workspace: Path) -> None:
    make(workspace, files=50, locked=False)
    out = as_user(NOBODY, lambda: repr(disk_usage(workspace, 1 << 30, 1000)))
    used, entries = ast.literal_eval(out)  # a tuple of two ints, from the child
    assert entries == 52 and used >= 0, out


def test_a_workspace_gone_before_its_count_is_empty(tmp_path: Path) -> None:
    assert disk_usage(tmp_path / "gone", 1 << 30, 10) == (0, 0)
