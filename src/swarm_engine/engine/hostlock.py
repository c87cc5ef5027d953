"""One engine per host and store: an exclusive lock its engine holds while it runs.

The store's `engines` rows say which engines run, but reading them and then registering is
two steps: several `start`s at the same moment all read "none" and all register. A lock
per store and `host_id` closes that gap: the engine takes it before it registers and holds
it until its process ends (the kernel lets go of it then, however the process ends,
`kill -9` included). `start --another` neither takes it nor asks.

A SQLite store's lock is on the database file itself: a Linux open-file-description lock
(`F_OFD_SETLK`) on one byte far past SQLite's own lock bytes, at an offset of the
`host_id`. The kernel keys it on the file, not on a name, so every name of the file (a
symlink, `..`, a hard link, a bind mount, another home) meets the same lock, and no file
is made next to the database. A database URL's lock is an `flock` on a file in this
user's private folder of the temporary folder (`lock_path`).

Nothing is written into either: who holds a lock is asked of the kernel
(`/proc/PID/fdinfo` lists the locks each open file holds), so a pid in a file can be
neither stale nor forged, and a file planted at the lock's name is never written to.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path

from swarm_engine.errors import ConflictError, SwarmError

OFD_BASE = 2**62
"""Where the engine lock bytes of a SQLite file begin: far past SQLite's own (the bytes
from 0x40000000 to 0x40000200) and any file's size, below the largest offset (2**63-1)."""

_FLOCK = struct.Struct("hhqqi4x")  # struct flock on Linux (x86-64, arm64): 32 bytes


def _host_hash(host_id: str) -> str:
    return hashlib.sha256(host_id.encode()).hexdigest()[:16]


def lock_offset(host_id: str) -> int:
    """The byte of a SQLite file that the engines of host `host_id` lock."""
    return OFD_BASE + int(_host_hash(host_id), 16) % 2**31


def lock_path(url: str, host_id: str) -> Path:
    """The lock file of the engines of database `url` on host `host_id`: in this user's
    folder of the machine's temporary folder, `swarm-engine-<uid>/engine-<hash of the
    database and host_id>.lock` (the database as `database_key` says, so two spellings of
    one URL meet one lock; no URL, nor its password, is written into a file name; 16 hex
    digits of SHA-256)."""
    key = hashlib.sha256(f"{_host_hash(host_id)}\n{database_key(url)}".encode()).hexdigest()
    return private_folder() / f"engine-{key[:16]}.lock"


IDENTITY = ("host", "hostaddr", "port", "dbname", "user", "options", "service")
"""The connection parameters that say which database a URL names (a password, `sslmode`
or `application_name` does not change it)."""
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def database_key(url: str) -> str:
    """Which database `url` names, as one text: the URL as libpq parses it (`postgres://`
    and `postgresql://` alike), its identity parameters only, with the defaults libpq
    takes from the environment or its own (port 5432, user the login name, database the
    user), a host name in lower case and the loopback names as one. A URL libpq cannot
    parse is its own text. Left apart: other names of one host (`db` and its address), a
    socket and TCP to the same server, a `service` file's contents."""
    import getpass

    from psycopg import Error
    from psycopg.conninfo import conninfo_to_dict

    try:
        said = conninfo_to_dict(url)
    except Error:
        return url
    env = os.environ
    host = str(said.get("host") or env.get("PGHOST") or "")
    if not host.startswith("/"):
        host = host.lower()
    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid
        login = str(os.getuid())
    user = str(said.get("user") or env.get("PGUSER") or login)
    parts = {
        **{k: str(said[k]) for k in IDENTITY if said.get(k) not in (None, "")},
        "host": "localhost" if host in LOOPBACK else host,
        "port": _port(str(said.get("port") or env.get("PGPORT") or "5432")),
        "user": user,
        "dbname": str(said.get("dbname") or env.get("PGDATABASE") or user),
    }
    return " ".join(f"{k}={parts[k]!r}" for k in IDENTITY if k in parts)


def _port(text: str) -> str:
    """A port as libpq reads it (`055432`, `+55432` and `55432` are one), else as given."""
    try:
        return str(int(text.strip()))
    except ValueError:
        return text


def private_folder() -> Path:
    """`<tmp>/swarm-engine-<uid>`: where this user's URL locks are."""
    return Path(tempfile.gettempdir()) / f"swarm-engine-{os.getuid()}"


def hold_engine_lock(store: str | Path, host_id: str) -> int:
    """Take the lock of `store`'s engines on host `host_id` for as long as this process lives
    (or until `os.close` of the descriptor returned). Raises `ConflictError` when another
    process holds it (naming it when it is one of this user's engines), and `SwarmError`
    when it cannot be taken.

    The descriptor of a SQLite store is one more on its file: closing it while this process
    has a transaction open on that file would drop SQLite's own (POSIX) locks, so it is
    closed only here, before any, when the lock is refused."""
    if isinstance(store, Path):
        fd, offset = _open_database(store), lock_offset(host_id)
    else:
        fd, offset = _open_lock_file(lock_path(store, host_id)), -1  # -1: an flock
    try:
        if offset >= 0:
            byte = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, byte)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):  # EAGAIN, or EACCES for a held fcntl lock
        held = os.fstat(fd)
        os.close(fd)
        holders = lock_holders(held, offset, _engines_of_this_user())
        raise ConflictError(refusal(holders)) from None
    except OSError as exc:
        os.close(fd)
        raise SwarmError(f"cannot lock the engine lock of {_name(store)}: {exc.strerror}") from exc
    return fd


def refusal(holders: list[int]) -> str:
    """The error of a `start` that found the lock held by `holders` (pids; none when the
    holder is not one of this user's engines)."""
    if not holders:
        return (
            "another process holds this store's engine lock on this host, not an engine of"
            " this user (another user's engine is stopped by that user's 'swarm-engine stop');"
            " 'swarm-engine start --another' starts a second engine"
        )
    pids = ", ".join(str(p) for p in holders)
    return (
        f"an engine (pid {pids}) is already running on this host with this store;"
        " 'swarm-engine stop' stops it, 'swarm-engine start --another' starts a second one"
    )


def holding(store: str | Path, host_id: str, pids: Iterable[int]) -> list[int]:
    """Those of `pids` (say, from `engines` rows: any writer's) whose process holds the
    engine lock of `store` on host `host_id` now, as the kernel says (empty when that
    cannot be read: the lock, or the processes, are another user's)."""
    try:
        if isinstance(store, Path):
            held, offset = os.stat(store), lock_offset(host_id)
        else:
            held, offset = os.stat(lock_path(store, host_id), follow_symlinks=False), -1
    except (OSError, ValueError):
        return []
    return lock_holders(held, offset, pids)


def engines_holding(store: str | Path, host_id: str) -> list[int]:
    """This user's engine processes (`swarm-engine start`, of any pid namespace: by their
    pids in this one) holding the engine lock of `store` on host `host_id` now, whatever
    the `engines` rows say (a row's pid may be edited, or another namespace's)."""
    return holding(store, host_id, _engines_of_this_user())


def lock_holders(held: os.stat_result, offset: int, pids: Iterable[int]) -> list[int]:
    """Those of `pids` with an open file holding a write lock on file `held`: an OFD lock
    on byte `offset`, or (`offset` -1) an `flock`. Read from `/proc/PID/fdinfo`, whose
    `lock:` lines name each lock an open file holds: `1: OFDLCK ADVISORY WRITE -1
    fe:00:1234 START END` (device major:minor in hex, inode, range)."""
    file = _file_key(held)
    want = ("OFDLCK", str(offset)) if offset >= 0 else ("FLOCK", None)
    found = []
    for pid in dict.fromkeys(pids):
        plain = isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**31
        if plain and _holds(pid, file, want):
            found.append(pid)
    return found


def _holds(pid: int, file: str, want: tuple[str, str | None]) -> bool:
    folder = f"/proc/{pid}/fdinfo"
    try:
        fds = os.listdir(folder)
    except OSError:  # gone, or another user's
        return False
    for fd in fds:
        try:
            with open(f"{folder}/{fd}", "rb") as info:
                text = info.read(65536).decode("ascii", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():  # lock:\t1: KIND ADVISORY WRITE PID FILE START END
            f = line.split()
            if f[:1] == ["lock:"] and _is_lock(f[1:], file, want):
                return True
    return False


def _is_lock(f: list[str], file: str, want: tuple[str, str | None]) -> bool:
    """Whether a lock line's fields (`1: KIND ADVISORY WRITE PID FILE START END`, as
    `/proc/locks` and `fdinfo` write them; a waiter's has `->` after the number) are a
    write lock of kind `want[0]` held on `file`, at byte `want[1]` when given."""
    return (
        len(f) >= 8 and f[1] == want[0] and f[3] == "WRITE" and f[5] == file
        and (want[1] is None or f[6] == want[1])
    )  # fmt: skip


def engine_lock_held(store: str | Path, host_id: str) -> bool:
    """Whether any process, in any pid namespace, holds the engine lock of `store` on host
    `host_id` (an engine started without `--another` runs), as `/proc/locks` says. Nothing
    is opened on the store (closing a descriptor of a SQLite file would drop this
    process's own SQLite locks), made or written; what cannot be read counts as held."""
    want: tuple[str, str | None]
    try:
        if isinstance(store, Path):
            held, want = os.stat(store), ("OFDLCK", str(lock_offset(host_id)))
        else:
            held = os.stat(lock_path(store, host_id), follow_symlinks=False)
            want = ("FLOCK", None)
    except FileNotFoundError:
        return False  # no such store, or no engine ever took its URL's lock
    except (OSError, ValueError):
        return True
    try:
        with open("/proc/locks", "rb") as locks:
            text = locks.read().decode("ascii", errors="replace")
    except OSError:
        return True
    return any(_is_lock(line.split(), _file_key(held), want) for line in text.splitlines())


def _file_key(held: os.stat_result) -> str:
    """A file as lock lines name it: `major:minor:inode` (device numbers in hex)."""
    return f"{os.major(held.st_dev):02x}:{os.minor(held.st_dev):02x}:{held.st_ino}"


def _engines_of_this_user() -> list[int]:
    """Pids of this user's `swarm-engine start` processes (whose locks we may read)."""
    from swarm_engine.vm.proctree import is_engine

    me, pids = os.getuid(), []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat(follow_symlinks=False).st_uid != me:
                    continue
            except OSError:
                continue
            if is_engine(int(entry.name)):
                pids.append(int(entry.name))
    return pids


def _name(store: str | Path) -> str:
    return str(store) if isinstance(store, Path) else "the database URL"


def _open_database(path: Path) -> int:
    """The SQLite file, open for writing (an OFD write lock needs it), names followed."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise SwarmError(f"cannot open {path} for the engine lock: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SwarmError(f"cannot lock {path}: not a regular file")
    return fd


def _open_lock_file(path: Path) -> int:
    """A URL's lock file in this user's private folder (made 0700 if missing, refused if
    it is not a folder of this user's that only this user can write, as ssh does), opened
    without following a symlink and never truncated nor written."""
    folder = path.parent
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError as exc:
        raise SwarmError(f"cannot make the engine lock folder {folder}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise SwarmError(f"the engine lock folder {folder} is not a folder (a symlink?)")
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise SwarmError(
            f"the engine lock folder {folder} is not this user's alone (owner uid"
            f" {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o}): remove it, or make it"
            f" this user's with mode 0700"
        )
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags | os.O_NONBLOCK, 0o600)  # a planted FIFO does not block
    except OSError as exc:
        raise SwarmError(f"cannot open the engine lock {path}: {exc.strerror}") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise SwarmError(f"the engine lock {path} is not a regular file")
    return fd
