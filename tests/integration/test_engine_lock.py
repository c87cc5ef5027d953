"""The engine lock (`engine/hostlock.py`) between real processes: a SQLite store's is on
the database file itself, so every name of the file meets it; a URL's lock file is
opened without following a name planted at it, in a folder only its user can write."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm_engine.engine.hostlock import hold_engine_lock, holding, lock_path
from swarm_engine.errors import ConflictError, SwarmError
from swarm_engine.store import open_store

HOLD = """
import sys
from pathlib import Path
from swarm_engine.engine.hostlock import hold_engine_lock
store = sys.argv[1]
hold_engine_lock(Path(store) if store.startswith("/") else store, sys.argv[2])
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes holding a lock (see `hold`), ended at the test's end."""
    held: list[subprocess.Popen[str]] = []
    yield held
    for p in held:
        p.communicate(input="", timeout=30)


def hold(held: list[subprocess.Popen[str]], store: str | Path, host: str) -> int:
    """Start a process that takes the engine lock of `store` for `host` and keeps it
    until its standard input ends; returns its pid once it holds the lock."""
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(store), host],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    held.append(p)
    assert p.stdout is not None and p.stdout.readline() == "held\n", p.communicate(timeout=30)
    return p.pid


def refused(store: str | Path, host: str, *, bind: Path | None = None) -> str:
    """The error of taking the lock in another process (a fresh one: this process's own
    descriptors are not its business); with `bind`, `store` is a bind mount of that file
    made in a mount namespace of that process alone."""
    argv = [sys.executable, "-c", HOLD, str(store), host]
    done = subprocess.run(
        bound(bind, Path(store), argv) if bind else argv,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "ConflictError" in done.stderr, (done.stdout, done.stderr)
    return done.stderr.strip().splitlines()[-1]


def bound(source: Path, mount: Path, argv: list[str]) -> list[str]:
    """`argv` run with `source` bind-mounted at `mount`, in a mount namespace of its own
    (gone with the process: nothing to unmount if the test fails)."""
    mount.touch()
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
            str(source), str(mount), *argv]  # fmt: skip


@pytest.fixture
def can_mount() -> None:
    if shutil.which("unshare") is None or os.getuid() != 0:
        pytest.skip("a bind mount needs root and unshare")
    done = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"no mount namespace here: {done.stderr.decode(errors='replace')}")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "home" / "tickets.db"
    open_store(path).close()
    return path


def test_every_name_of_the_file_meets_one_lock_and_no_file_is_made(
    db: Path, tmp_path: Path, holder: list[subprocess.Popen[str]]
) -> None:
    """A hard link in another folder, a symlink, `..`: one lock (a hard link went past
    the lock file kept by path, and two engines ran one ticket twice)."""
    before = sorted(os.listdir(db.parent))
    pid = hold(holder, db, "host-a")
    (tmp_path / "elsewhere").mkdir()
    linked = tmp_path / "elsewhere" / "hard.db"
    os.link(db, linked)
    (tmp_path / "sym.db").symlink_to(db)
    for name in (linked, tmp_path / "sym.db", db.parent / ".." / "home" / "tickets.db"):
        assert "another process holds this store's engine lock" in refused(name, "host-a")
        assert holding(name, "host-a", [pid, os.getpid()]) == [pid]
    assert holding(db, "host-b", [pid]) == []  # another host_id: another byte
    other = hold(holder, linked, "host-b")
    assert holding(db, "host-b", [pid, other]) == [other]
    assert sorted(os.listdir(db.parent)) == before  # no lock file next to the database


def test_a_bind_mount_of_the_file_meets_the_same_lock(
    db: Path, tmp_path: Path, holder: list[subprocess.Popen[str]], can_mount: None
) -> None:
    hold(holder, db, "host-a")
    said = refused(tmp_path / "mounted.db", "host-a", bind=db)
    assert "another process holds this store's engine lock" in said


def test_the_lock_leaves_sqlite_alone(db: Path, holder: list[subprocess.Popen[str]]) -> None:
    """The lock byte is far from SQLite's own: a held lock lets every client read and
    write, and the database stays whole."""
    hold(holder, db, "host-a")
    conn = sqlite3.connect(db, timeout=5)
    try:
        with conn:
            conn.execute(
                "INSERT INTO tickets (title, status, agent_id) VALUES ('x', 'open', 'echo')"
            )
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    assert os.path.getsize(db) < 2**20  # nothing written at the lock's offset


def test_the_holder_named_is_only_an_engine_of_this_user(db: Path) -> None:
    """A lock held by a process that is not a `swarm-engine start` (this test) is refused
    without a pid: no pid is written anywhere to be forged or to go stale."""
    fd = hold_engine_lock(db, "host-a")
    try:
        with pytest.raises(ConflictError) as caught:
            # another open file of this process meets the lock as another process would
            hold_engine_lock(db, "host-a")
        assert str(caught.value).startswith("another process holds this store's engine lock")
    finally:
        os.close(fd)
    os.close(hold_engine_lock(db, "host-a"))  # free again once closed


@pytest.fixture
def tmpdir_of_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own temporary folder as the machine's (where URL locks go)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(mode=0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("TMPDIR", str(tmp))  # for the processes it starts
    return tmp


URL = "postgresql://engine@db.example/swarm"


def test_a_url_lock_does_not_follow_a_planted_symlink(tmpdir_of_test: Path, tmp_path: Path) -> None:
    """A symlink at the lock's name (its folder was once in a world-writable place) is
    not followed, and the file it names is neither truncated nor written."""
    path = lock_path(URL, "host-a")
    path.parent.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path.symlink_to(victim)
    with pytest.raises(SwarmError) as caught:
        hold_engine_lock(URL, "host-a")
    assert str(caught.value).startswith(f"cannot open the engine lock {path}: ")
    assert victim.read_text() == "precious\n"


def test_a_url_lock_is_never_written(tmpdir_of_test: Path) -> None:
    path = lock_path(URL, "host-a")
    path.parent.mkdir(mode=0o700)
    path.write_text("left by someone\n")
    fd = hold_engine_lock(URL, "host-a")
    try:
        assert path.read_text() == "left by someone\n"
        assert holding(URL, "host-a", [os.getpid()]) == [os.getpid()]
    finally:
        os.close(fd)


def test_a_url_lock_folder_is_made_private(tmpdir_of_test: Path) -> None:
    os.close(hold_engine_lock(URL, "host-a"))
    info = os.lstat(lock_path(URL, "host-a").parent)
    assert (info.st_mode & 0o777, info.st_uid) == (0o700, os.getuid())


@pytest.mark.parametrize("kind", ["group-writable", "symlink", "another user's"])
def test_a_url_lock_folder_others_can_write_is_refused(
    tmpdir_of_test: Path, tmp_path: Path, kind: str
) -> None:
    """As ssh does with `~/.ssh`: a folder another user made, or can write, could hold a
    lock file they swap; one line, and nothing made in it."""
    folder = lock_path(URL, "host-a").parent
    if kind == "symlink":
        (tmp_path / "real").mkdir(mode=0o700)
        folder.symlink_to(tmp_path / "real")
    else:
        folder.mkdir()
        folder.chmod(0o770 if kind == "group-writable" else 0o700)
        if kind == "another user's":
            if os.getuid() != 0:
                pytest.skip("making a folder another user's needs root")
            os.chown(folder, 65534, 65534)
    with pytest.raises(SwarmError) as caught:
        hold_engine_lock(URL, "host-a")
    said = str(caught.value)
    assert said.startswith(f"the engine lock folder {folder} is not "), said
    assert "\n" not in said
    assert not any((tmp_path / "real").iterdir()) if kind == "symlink" else True
    if kind != "symlink":
        assert not any(folder.iterdir())
        shutil.rmtree(folder)


def test_spellings_of_one_database_url_meet_one_lock(
    tmpdir_of_test: Path, holder: list[subprocess.Popen[str]]
) -> None:
    """`postgres://` and `postgresql://`, `localhost` and `127.0.0.1`, the default port
    written or not, a password or `sslmode` added: one database, so one lock (each text
    had its own, and two engines ran on one host)."""
    pid = hold(holder, "postgres://engine@localhost/swarm", "host-a")
    for url in (
        "postgresql://engine@127.0.0.1:5432/swarm",
        "postgresql://engine:secret@[::1]/swarm?sslmode=require&application_name=x",
        "postgresql://engine@LOCALHOST:5432/swarm?connect_timeout=3",
        "postgresql://engine@localhost:05432/swarm",  # a port as libpq reads it
    ):
        assert "another process holds this store's engine lock" in refused(url, "host-a")
        assert holding(url, "host-a", [pid]) == [pid]
    for other in (
        "postgresql://engine@localhost/other",  # another database
        "postgresql://someone@localhost/swarm",  # another user
        "postgresql://engine@localhost:5433/swarm",  # another server
    ):
        assert holding(other, "host-a", [pid]) == []


def test_stop_says_so_when_the_lock_holder_is_no_engine_it_can_stop(
    tmp_path: Path, holder: list[subprocess.Popen[str]]
) -> None:
    """A process holding the store's engine lock that `stop` cannot tell for one of this
    user's engines (another user's, or an interpreter of another name): `stop` exits 4
    with one line, where it said "no engine is running" and exit 0."""
    home = tmp_path / "home"
    env = {**os.environ, "SWARM_HOME": str(home), "SWARM_HOST_ID": "host-a"}
    run = [sys.executable, "-m", "swarm_engine"]
    subprocess.run([*run, "status", "--init"], env=env, check=True, capture_output=True)
    hold(holder, home / "tickets.db", "host-a")
    done = subprocess.run([*run, "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 4, done
    assert done.stderr.startswith("error: this store's engine lock on this host is held by a")
    assert len(done.stderr.splitlines()) == 1 and "no engine is running" not in done.stdout
