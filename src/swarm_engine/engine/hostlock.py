"""One engine per host and store: an exclusive `flock` its engine holds while it runs.

The store's `engines` rows say which engines run, but reading them and then registering is
two steps: several `start`s at the same moment all read "none" and all register. A lock
file per store (`lock_path`: next to a SQLite file, whatever home or path names it) closes
that gap: the engine takes it before it registers and holds it until its process ends (the kernel lets go of it then,
however the process ends, `kill -9` included). `start --another` neither takes it nor asks.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path

from swarm_engine.errors import ConflictError, SwarmError


def lock_path(store: str | Path, host_id: str) -> Path:
    """The lock file of the engines of `store` on host `host_id` (the `host_id` setting:
    the store's name for this machine; hosts told apart by it may share one machine). A
    SQLite store's is next to its file, `<file>.<hash of host_id>.engine-lock`, by the
    file's real path (symlinks and `..` resolved), so every home that names the same file
    finds the same lock. A database URL's is in this user's folder of the machine's
    temporary folder, `engine-<hash of URL and host_id>.lock` (no URL, nor its password,
    is written into a file name). Hashes: 16 hex digits of SHA-256."""
    host = hashlib.sha256(host_id.encode()).hexdigest()[:16]
    if isinstance(store, Path):
        real = store.resolve()
        return real.with_name(f"{real.name}.{host}.engine-lock")
    folder = Path(tempfile.gettempdir()) / f"swarm-engine-{os.getuid()}"
    key = hashlib.sha256(f"{host}\n{store}".encode()).hexdigest()[:16]
    return folder / f"engine-{key}.lock"


def hold_engine_lock(store: str | Path, host_id: str) -> int:
    """Take the lock of `store`'s engines on host `host_id` for as long as this process lives
    (or until `os.close` of the descriptor returned). Raises `ConflictError` when another
    process holds it, naming that process (its pid is written in the file), and
    `SwarmError` when the lock file cannot be made or locked."""
    path = lock_path(store, host_id)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise SwarmError(f"cannot make the engine lock {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise ConflictError(
            f"an engine{holder} is already running on this host with this store;"
            " 'swarm-engine stop' stops it, 'swarm-engine start --another' starts a second one"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise SwarmError(f"cannot lock {path}: {exc.strerror}") from exc
    with contextlib.suppress(OSError):  # who holds it, for the next one's message
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def engine_lock_held(store: str | Path, host_id: str) -> bool:
    """Whether a process holds the lock of `store`'s engines on host `host_id` (an engine
    started without `--another` runs, in any pid namespace: a lock is on the file). Nothing
    is made or written; a lock file that cannot be opened or tested counts as held."""
    try:
        fd = os.open(lock_path(store, host_id), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # no engine ever took it
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: an engine holds it
        return True
    finally:
        os.close(fd)  # (and a shared lock taken is let go with it)
    return False


def _holder(fd: int) -> str:
    """` (pid N)` as the lock file says, or "" when it says nothing readable."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {text})" if text.isdigit() else ""
