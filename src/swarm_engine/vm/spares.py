"""Spare workspaces: a destroyed VM's capped workspace, emptied, checked and kept
mounted for the next VM, so that a VM's boot and destroy skip the image copy, the loop
device and the mount (about 1.2 ms of the engine's CPU per VM, and as much again in the
kernel's own threads, `benchmarks/peers.py`).

Only a workspace that is a filesystem of its own (`disk_cap = "mount"`, `vm/diskcap.py`)
of a sandboxed VM (bubblewrap: its commands' PID namespaces ended, so no process of the
step is left in it) is kept. It is kept only when, once emptied, the kernel counts it as
new: as many free blocks and free inodes as the filesystem had just made
(`Template.fresh`). Anything the step left that could not be deleted (a file still held
open, a folder grown large), or anything unexpected, and the workspace is unmounted and
deleted as before. Its root folder loses the step's attributes (extended attributes and
ACLs, mode, owner, its inode flags as `chattr` sets them, its access and modification
times), and the blocks the step wrote are given back to the host's disk (`FITRIM`), so
a spare holds no more of it than a new workspace. What a new VM could still learn of the
one before is what an empty ext4 filesystem shows of its past: which inode numbers and
blocks come next, and its root folder's change time.

A spare is a VM folder renamed `.spare-<hex>` in the VMs' folder (`home/vms`), its owner
(`vm/owner.py`) still this engine: a killed engine's spares are reaped as its VM folders
are. At most `MOST_SPARES` are kept; `close` deletes them.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
import weakref
from pathlib import Path

from swarm_engine.vm.diskcap import IMAGE_NAME, Template, folder_flags, trim
from swarm_engine.vm.workspace import remove_folder

log = logging.getLogger(__name__)

MOST_SPARES = 16
"""At most this many emptied workspaces (each a mount and a loop device) wait for a VM."""
SPARE_PREFIX = ".spare-"
KEPT = frozenset({"workspace", IMAGE_NAME})
"""What a spare's folder holds: the mounted workspace and its image."""


class Spares:
    """Emptied workspaces of one backend's image (thread-safe: boots and destroys run on
    worker threads)."""

    def __init__(self, root: Path, image: Template) -> None:
        self.root = root
        self.image = image
        self._kept: list[Path] = []
        self._lock = threading.Lock()
        self._closed = False
        self._at_exit = weakref.finalize(self, _delete_all, self._kept, self._lock)
        """A backend left unclosed: its spares are deleted as Python exits."""

    def take(self, folder: Path) -> bool:
        """Rename a spare to the new VM's `folder` (not there yet): True when one was
        there, else False (nothing changed). Blocking (a rename)."""
        while True:
            with self._lock:
                if not self._kept:
                    return False
                spare = self._kept.pop()
            try:
                os.rename(spare, folder)
                return True
            except OSError as exc:  # e.g. `folder` made by someone else: that spare goes
                log.warning("spare workspace %s: cannot be used: %s", spare.name, exc.strerror)
                remove_folder(spare)

    def retire(self, folder: Path) -> str | None:
        """End a destroyed VM's `folder`: kept as a spare when its workspace empties to
        a new one's counts, else deleted (`remove_folder`). Returns None when it is gone
        from `folder`, else one line saying what is left. Never raises."""
        try:
            if self._empty(folder):
                spare = self.root / f"{SPARE_PREFIX}{secrets.token_hex(8)}"
                with self._lock:
                    if not self._closed and len(self._kept) < MOST_SPARES:
                        os.rename(folder, spare)
                        self._kept.append(spare)
                        return None
        except Exception as exc:  # not kept: deleted as any VM folder is
            log.debug("workspace of %s not kept: %s", folder.name, exc)
        return remove_folder(folder)

    def _empty(self, folder: Path) -> bool:
        """Delete what the VM left in `folder` but its mounted, emptied workspace: True
        when that workspace now counts as a new one."""
        with self._lock:
            if self._closed or len(self._kept) >= MOST_SPARES:
                return False
        workspace = folder / "workspace"
        if self.image.fresh is None or not os.path.ismount(workspace):
            return False
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name not in KEPT:
                    _delete(entry)
        with os.scandir(workspace) as entries:
            for entry in entries:
                _delete(entry)
        for name in os.listxattr(workspace, follow_symlinks=False):
            os.removexattr(workspace, name, follow_symlinks=False)
        os.chown(workspace, 0, 0, follow_symlinks=False)
        os.chmod(workspace, 0o700, follow_symlinks=False)
        flags = self.image.root_flags  # `chattr` (sync, noatime, ...) set back as made
        if flags is None or folder_flags(workspace, set_to=flags) != flags:
            return False
        os.utime(workspace, follow_symlinks=False)  # its times: now, as a new one's
        info = os.statvfs(workspace)
        if (info.f_bfree, info.f_ffree) != self.image.fresh:
            return False
        trim(workspace)  # what the step wrote goes back to the host's disk
        return True

    def close(self) -> None:
        """Delete every spare (blocking; a spare that cannot be is logged and left for
        `cleanup`)."""
        with self._lock:
            self._closed = True
        self._at_exit()


def _delete_all(kept: list[Path], lock: threading.Lock) -> None:
    with lock:
        spares = kept[:]
        kept.clear()
    for spare in spares:
        left = remove_folder(spare)
        if left is not None:
            log.warning("%s", left)


def _delete(entry: os.DirEntry[str]) -> None:
    """Delete one entry of a folder, never following a link; raises `OSError` (and
    `RecursionError` for a chain of folders too deep for `rmtree`)."""
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path)
    else:
        os.unlink(entry.path)


def is_spare(name: str) -> bool:
    """Whether a name in the VMs' folder is a spare workspace's."""
    return name.startswith(SPARE_PREFIX) and len(name) > len(SPARE_PREFIX)
