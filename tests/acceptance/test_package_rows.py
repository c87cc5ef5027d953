"""An agent's package is read only from where `agent register` put it
(`<home>/packages/<name>/<version>`), and only its regular files, within the package
bounds (2000 files, 64 MiB): a registry row is any writer's, so its `package_path` may
name any host folder (`/etc`), and a package folder may since have been given a device,
a FIFO or a socket. Each such ticket fails with one line, nothing of the host is copied
into a sandbox or stored, no worker thread is left blocked, and the tickets around it
run (docs/security.md)."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.acceptance.test_daemon import FAST
from tests.support.cli import insert_agent_row, query, start_engine, swarm_inproc

from swarm_engine.models import AgentSpec


def _tickets(db: Path, rows: list[tuple[str, str]]) -> None:
    conn = sqlite3.connect(db, timeout=30)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO tickets (title, status, agent_id) VALUES (?, 'open', ?)", rows
            )
    finally:
        conn.close()


def _run_until_idle(home: Path) -> str:
    proc = start_engine(home, "--max-vms", "2", "--until-idle", **FAST)
    try:
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:  # a worker thread left blocked keeps it from exiting
            os.killpg(proc.pid, 9)
            proc.wait()
    assert proc.returncode == 0, out
    return out


def _register(home: Path, folder: Path, name: str, command: str) -> Path:
    """A registered shell agent with a package; returns its folder under the home."""
    write_agent(
        folder,
        f"name: {name}\nkind: shell\ntimeout_seconds: 20\ncommand: {command!r}\n",
        {"hello.txt": "hello from the package\n"},
    )
    done = swarm_inproc(home, "agent", "register", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    return home / "packages" / name / "1.0.0"


def _row(home: Path, name: str, package_path: str) -> None:
    insert_agent_row(
        home,
        AgentSpec(
            name=name, kind="shell", timeout_seconds=20, package_path=package_path,
            command="head -c 40 shadow; cat hello.txt; echo; ls | wc -l",
        ),
    )  # fmt: skip


def test_a_package_path_outside_the_agents_own_folder_fails_its_ticket(
    home: Path, tmp_path: Path
) -> None:
    """The tester's `peek2` row (`package_path: /etc`), the same through a symlink that
    stands for its own folder, through `..`, and another agent's registered package."""
    other = _register(home, tmp_path / "other", "other", "cat hello.txt")
    own = home / "packages" / "viasymlink" / "1.0.0"
    own.parent.mkdir(parents=True)
    own.symlink_to("/etc")
    _row(home, "peek2", "/etc")
    _row(home, "viasymlink", str(own))
    _row(home, "dotdot", str(home / "packages" / "dotdot" / "1.0.0" / ".." / ".." / ".."))
    _row(home, "borrow", str(other))
    db = home / "tickets.db"
    _tickets(db, [("before", "other"), ("peek2", "peek2"), ("viasymlink", "viasymlink"),
                  ("dotdot", "dotdot"), ("borrow", "borrow"), ("after", "other")])  # fmt: skip
    _run_until_idle(home)
    by_title = {t["title"]: t for t in query(db, "SELECT title, status, error FROM tickets")}
    assert by_title["before"]["status"] == by_title["after"]["status"] == "done"
    for title in ("peek2", "viasymlink", "dotdot", "borrow"):
        ticket = by_title[title]
        assert ticket["status"] == "failed", ticket
        assert "\n" not in ticket["error"], ticket
        assert "package" in ticket["error"] and "internal error" not in ticket["error"], ticket
    assert "is not its registered package folder" in by_title["peek2"]["error"]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        dump = "\n".join(conn.iterdump())
    assert "root:" not in dump  # nothing of /etc/shadow or /etc/passwd was stored


def test_a_package_holding_anything_but_regular_files_fails_its_ticket(
    home: Path, tmp_path: Path
) -> None:
    """A FIFO (it blocked a worker thread for good), a character device (/dev/zero's: read
    without end), a socket, over 2000 files, over 64 MiB: each fails its ticket with one
    line, at once, and the engine ends when the tickets do. A symlink is left out, never
    followed."""
    fifo = _register(home, tmp_path / "fifo", "fifo", "cat hello.txt")
    os.mkfifo(fifo / "pipe")
    device = _register(home, tmp_path / "device", "device", "cat hello.txt")
    try:
        os.mknod(device / "zero", stat.S_IFCHR | 0o644, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("cannot make a device file here (needs CAP_MKNOD)")
    sock_dir = _register(home, tmp_path / "sock", "sock", "cat hello.txt")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_dir / "s"))
    many = _register(home, tmp_path / "many", "many", "cat hello.txt")
    for n in range(2000):
        (many / f"f{n}").touch()
    big = _register(home, tmp_path / "big", "big", "cat hello.txt")
    with (big / "sparse.bin").open("wb") as f:
        f.truncate(64 * 1024 * 1024 + 1)
    linked = _register(home, tmp_path / "linked", "linked", "test ! -e shadow && cat hello.txt")
    (linked / "shadow").symlink_to("/etc/shadow")
    db = home / "tickets.db"
    names = ["fifo", "device", "sock", "many", "big", "linked"]
    _tickets(db, [(name, name) for name in names])
    try:
        _run_until_idle(home)
    finally:
        sock.close()
    by_title = {t["title"]: t for t in query(db, "SELECT title, status, error FROM tickets")}
    assert by_title["linked"]["status"] == "done", by_title["linked"]
    expected = {
        "fifo": "'pipe' is not a regular file",
        "device": "'zero' is not a regular file",
        "sock": "'s' is not a regular file",
        "many": "over 2000 files",
        "big": "over 64 MiB",
    }
    for title, text in expected.items():
        ticket = by_title[title]
        assert ticket["status"] == "failed", ticket
        assert text in ticket["error"] and "\n" not in ticket["error"], ticket
    out = subprocess.run(
        ["sqlite3", str(db), "SELECT result FROM tickets WHERE title = 'linked'"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "root:" not in out


def test_registration_refuses_a_package_holding_a_fifo(home: Path, tmp_path: Path) -> None:
    folder = write_agent(tmp_path / "a", "name: a\nkind: shell\ncommand: 'true'\n")
    os.mkfifo(folder / "pipe")
    done = swarm_inproc(home, "agent", "register", str(folder))
    assert done.returncode == 5, done.stdout + done.stderr
    assert "pipe: not a regular file" in done.stderr and "\n" not in done.stderr.strip()
    assert not (home / "packages" / "a").exists()


def test_a_row_with_a_digest_but_no_package_path_still_gets_its_package(
    home: Path, tmp_path: Path
) -> None:
    """`package_digest` is a package's record and `package_path` only says where it was
    registered: a row whose path another writer emptied or nulled still runs with its
    package's files (read through this host's link, checked against the digest); it ran
    with none before, and its ticket could end done without them."""
    for name in ("nulled", "emptied"):
        _register(home, tmp_path / name, name, "test -f hello.txt")
    with contextlib.closing(sqlite3.connect(home / "registry.db")) as conn, conn:
        conn.execute(
            "UPDATE agents SET spec = json_set(spec, '$.package_path', json('null'))"
            " WHERE name = 'nulled'"
        )
        conn.execute(
            "UPDATE agents SET spec = json_set(spec, '$.package_path', '') WHERE name = 'emptied'"
        )
    db = home / "tickets.db"
    _tickets(db, [("nulled", "nulled"), ("emptied", "emptied")])
    _run_until_idle(home)
    rows = query(db, "SELECT title, status, error FROM tickets ORDER BY id")
    assert [(r["title"], r["status"]) for r in rows] == [
        ("nulled", "done"),
        ("emptied", "done"),
    ], rows
