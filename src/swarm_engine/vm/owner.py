"""Whose a VM folder is: `owner.pid`, the pid of the engine that made it and its pid
namespace, written by every backend that makes VM folders (process, QEMU)."""

from __future__ import annotations

import os
from pathlib import Path

from swarm_engine.vm.proctree import pid_alive, runs_swarm_engine

OWNER_FILE = "owner.pid"
"""In each VM folder: the pid of the engine that made it and its pid namespace."""


def pid_namespace() -> str:
    """This process's pid namespace (`pid:[4026531836]`), or "" if it cannot be read."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def write_owner(folder: Path) -> None:
    """Record this process, in its pid namespace, as the owner of VM folder `folder`."""
    (folder / OWNER_FILE).write_text(f"{os.getpid()} {pid_namespace()}\n")


def owner_of(folder: Path) -> tuple[int | None, bool]:
    """The pid in `folder`'s `owner.pid` (None if none can be read), and whether its
    engine recorded another pid namespace than this process's: that pid means nothing
    here, so such an owner is never judged gone (an engine run in `unshare --pid`)."""
    try:
        said = (folder / OWNER_FILE).read_text().split()
        pid = int(said[0])
    except (OSError, ValueError, IndexError):
        return None, False
    return pid, len(said) > 1 and said[1] != pid_namespace()


def engine_owner(folder: Path) -> str | None:
    """Why VM folder `folder` is a running engine's, by its `owner.pid`, or None: an owner
    of another pid namespace (not ours to judge), or one alive that runs swarm-engine
    (`runs_swarm_engine`; this process too, when it is one)."""
    owner, elsewhere = owner_of(folder)
    if elsewhere:
        return "its folder's owner.pid names an engine of another pid namespace"
    if owner is not None and pid_alive(owner) and runs_swarm_engine(owner):
        return f"its folder's owner.pid names engine process {owner}, running"
    return None
