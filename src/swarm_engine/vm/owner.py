"""Whose a VM folder is: the pid of the engine that made it and its pid namespace, written
by every backend that makes VM folders: QEMU in an `owner.pid` file, the process sandbox
in an extended attribute of the folder (`OWNER_XATTR`: no inode made and deleted per VM,
which ext4 without a journal makes costly; the file where a file system has none)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from swarm_engine.vm.proctree import pid_alive, runs_swarm_engine

OWNER_FILE = "owner.pid"
"""In each VM folder: the pid of the engine that made it and its pid namespace."""
OWNER_XATTR = "user.swarm-engine.owner"
"""The same, as an extended attribute of the folder (`write_owner(as_file=False)`)."""


@functools.cache
def pid_namespace() -> str:
    """This process's pid namespace (`pid:[4026531836]`), or "" if it cannot be read."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def write_owner(folder: Path, *, as_file: bool = True) -> None:
    """Record this process, in its pid namespace, as the owner of VM folder `folder`: in
    `owner.pid`, or (`as_file=False`) in the folder's `OWNER_XATTR`, falling back to the
    file where the file system keeps no user attributes."""
    said = f"{os.getpid()} {pid_namespace()}\n"
    if not as_file:
        try:
            os.setxattr(folder, OWNER_XATTR, said.encode())
            return
        except OSError:  # (ENOTSUP: no user attributes here)
            pass
    (folder / OWNER_FILE).write_text(said)


def owner_of(folder: Path) -> tuple[int | None, bool]:
    """The pid in `folder`'s `owner.pid` (None if none can be read), and whether its
    engine recorded another pid namespace than this process's: that pid means nothing
    here, so such an owner is never judged gone (an engine run in `unshare --pid`)."""
    try:
        said = os.getxattr(folder, OWNER_XATTR).decode("utf-8", "replace").split()
    except OSError:
        try:
            said = (folder / OWNER_FILE).read_text().split()
        except (OSError, ValueError):
            return None, False
    try:
        pid = int(said[0])
    except (ValueError, IndexError):
        return None, False
    return pid, len(said) > 1 and said[1] != pid_namespace()


def engine_owner(folder: Path) -> str | None:
    """Why VM folder `folder` is a running engine's, by its recorded owner, or None: an owner
    of another pid namespace (not ours to judge), or one alive that runs swarm-engine
    (`runs_swarm_engine`; this process too, when it is one)."""
    owner, elsewhere = owner_of(folder)
    if elsewhere:
        return "its folder's owner is an engine of another pid namespace"
    if owner is not None and pid_alive(owner) and runs_swarm_engine(owner):
        return f"its folder's owner is engine process {owner}, running"
    return None
