"""A SQLite database file's name: whether it still leads to the file opened under it,
and whether the file has a second name that SQLite cannot see (a hard link, a bind mount
of the file alone), which would give it two write-ahead logs.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from swarm_engine.errors import StoreError

Identity = tuple[int, int, int, int]
"""A database file's name as opened: (device, inode) of the file it leads to, and of the
name itself (`lstat`: the file, or the symlink that leads there)."""


def file_identity(path: Path) -> Identity | None:
    """The file `path` names and the name itself (see `Identity`); None when it names
    none (or cannot be looked at). Two answers differ when the name was deleted, replaced
    (`rm`, `mv` over it), or made a symlink or re-pointed in between: SQLite keeps the
    `-wal` file next to the name it resolved at open, so a file moved away and linked
    back under its old name would have two write-ahead logs."""
    try:
        info, name = os.stat(path), os.lstat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino, name.st_dev, name.st_ino


def name_moved(path: Path, opened: Identity | None) -> str | None:
    """Why `path` no longer names the database file opened as `opened` ("deleted",
    "replaced by another file"), or None while it still does (or cannot be looked at just
    now: a transient failure of `stat` is not taken for a deleted file). A writer that
    went on in the old file would write where no one else looks."""
    if opened is None:
        return None
    if opened[:2] == opened[2:]:  # the name was the file itself: one `lstat` tells (hot path)
        try:
            name = os.lstat(path)
        except (OSError, ValueError):
            name = None
        if name is not None and (name.st_dev, name.st_ino) == opened[:2]:
            return None
    try:
        info, name = os.stat(path), os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "deleted"
    except (OSError, ValueError):
        return None
    now = (info.st_dev, info.st_ino, name.st_dev, name.st_ino)
    if now == opened:
        return None
    if now[:2] == opened[:2]:
        return "moved, its name now a link to it"
    return "replaced by another file"


def one_name(path: Path) -> None:
    """Refuse a database file with a second name that is not a symlink: a hard link, or
    a bind mount of the file alone. SQLite keeps its write-ahead log (`-wal`) and its
    shared memory (`-shm`, which holds the write lock) next to the name it opened, so
    writers through two such names do not see each other's writes nor wait for each
    other, and rows are lost. A symlink (resolved by SQLite) is one name. A file that does
    not exist yet, or cannot be read, is left to SQLite to say. A name that leads to
    something other than a file (a directory, a FIFO, a device) is refused as what it is."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(f"database {path} is {_kind(info.st_mode)}, not a database file")
    links = info.st_nlink
    if links > 1:
        raise StoreError(
            f"database {path} has {links} hard links: SQLite keeps a write-ahead log per"
            " name, so writers through two names lose data; use one name (a symlink is fine)"
        )
    if os.path.realpath(path) in _mount_points():
        raise StoreError(
            f"database {path} is a bind mount of the file alone: SQLite keeps a write-ahead"
            " log per name, so writers through two names lose data; mount its folder instead"
        )


def _kind(mode: int) -> str:
    """What a name that is not a regular file leads to, as "a directory"."""
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"))  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "not a regular file")


_ESCAPED = re.compile(r"\\([0-7]{3})")


def _mount_points() -> set[str]:
    """This process's mount points (`/proc/self/mountinfo`; none where it is not there)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
            lines = info.read().splitlines()
    except OSError:
        return set()
    fields = (line.split(" ") for line in lines)
    return {_ESCAPED.sub(_unescape, f[4]) for f in fields if len(f) > 4}


def _unescape(octal: re.Match[str]) -> str:
    """A mount point's escaped character: `\\040` is a space, `\\134` a backslash."""
    return chr(int(octal[1], 8))
