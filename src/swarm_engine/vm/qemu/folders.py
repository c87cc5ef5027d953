"""The QEMU backend's VM folders, as found on disk: their names and files (what is this
backend's, and so may be swept), and what their files say (owner engine, QEMU pid)."""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

from swarm_engine.vm.owner import OWNER_FILE as OWNER_FILE  # re-exported
from swarm_engine.vm.owner import owner_of as owner_of  # re-exported

if TYPE_CHECKING:
    from swarm_engine.vm.qemu.config import QemuOptions
from swarm_engine.vm.owner import pid_namespace as pid_namespace  # re-exported

SERVING_FILE = "vm.id"
"""In a warm VM's folder once it is handed out: the id it serves under (its folder keeps
the name it was booted with). `fence` kills a folder's QEMU only for the row of that id."""
VM_FOLDER = re.compile(r"(?:vm|warm|template)-[0-9a-f]{12}|doctor-[0-9a-f]{8}")
"""The names of the VM folders this backend makes in its run folder: the ids of the VMs
booted there (the engine's `vm-`, warm and template VMs', `vm doctor`'s)."""
VM_FILES = frozenset(
    {OWNER_FILE, SERVING_FILE, "socket", "qemu.pid", "qemu.log", "console.log", "agent.sock",
     "qmp.sock", "relays.lock"}
)  # fmt: skip
"""All that `_launch` (and QEMU) put in a VM folder: a folder holding anything else, or
named otherwise, is not this backend's, and is never removed nor counted (a run folder
may be shared, or be a home: `run_dir` is any path)."""


def is_vm_folder(folder: Path) -> bool:
    """Whether `folder` has the shape of a VM folder this backend makes: named like one of
    its VMs (`VM_FOLDER`), a folder (not a link) holding only files `_launch` puts there
    (`VM_FILES`; no folder). What cannot be read is not."""
    if not VM_FOLDER.fullmatch(folder.name):
        return False
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return False
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name not in VM_FILES or entry.is_dir(follow_symlinks=False):
                    return False
    except OSError:
        return False
    return True


def serves(folder: Path, vm_id: str) -> bool:
    """Whether `folder` is the VM `vm_id`'s: booted under that id, or a warm VM's handed
    out under it (`SERVING_FILE`)."""
    if folder.name == vm_id:
        return True
    try:
        return (folder / SERVING_FILE).read_text(errors="replace").strip() == vm_id
    except OSError:
        return False


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def run_dir_of(home: Path, options: QemuOptions) -> Path:
    """The VM folders' parent: `run_dir` (a relative one from the home, never from the
    current folder of whichever command reads it: `start`, `cleanup`), else
    `<home>/run/qemu`."""
    return home / options.run_dir if options.run_dir is not None else home / "run" / "qemu"


def images_dir_for(home: Path) -> Path:
    """Images live in `<home>/images`, unless $SWARM_QEMU_IMAGES names a shared folder (CI
    builds or restores one image there for every test home)."""
    shared = os.environ.get("SWARM_QEMU_IMAGES")
    return Path(shared) if shared else home / "images"


def writable_or(preferred: Path, fallback: Path) -> Path:
    """`preferred` (made if missing) when this process can write in it, else `fallback`."""
    try:
        preferred.mkdir(parents=True, exist_ok=True)
    except OSError:
        return fallback
    return preferred if os.access(preferred, os.W_OK) else fallback
