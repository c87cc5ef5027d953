"""A snapshot template on disk: one folder per saved template guest.

    <snapshot_dir>/<image>/<key>.<nonce>.template/
        state           the template's saved state (QMP `migrate`)
        ram             mapped mode only: the template's guest RAM
        template.json   the mode, and who the RAM file was when it was saved

`key` is `<recipe>-<build>-<memory>m-<vcpus>c-<accel>-<mode>`, so a new image build, a
other spec or another accelerator never finds an old template.

*mapped* (the default): the template VM's RAM is the file `ram`, written through a shared
mapping (`share=on`), and `state` holds device state only (`x-ignore-shared`, ~50 KB).
Every clone maps `ram` private and copy-on-write (`share=off`): pages it only reads are
the host's one page-cache copy, pages it writes become its own, and nothing it does
reaches the file. *copy*: `state` also holds all of the guest's RAM, which each clone
reads into memory of its own (the earlier way; as isolated, slower, more memory).

A folder is complete (files synced) before it gets its name and never changes afterwards,
so a state and its RAM file always belong together; templates are replaced by new
folders, never rewritten (a running clone's mapping still reads its own file). Before
each restore the RAM file is checked to be the same inode, size and mtime as when it was
saved; if not, the template is dropped and made again.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Mode = Literal["mapped", "copy"]
META = "template.json"
STALE_TMP = 3600.0
"""A `*.tmp` folder this old is a template whose engine died while saving it."""


@dataclass(frozen=True)
class Template:
    folder: Path
    mode: Mode
    ram_id: tuple[int, int, int] | None = None
    """(inode, size, mtime_ns) of `ram` when it was saved (mapped mode)."""

    @property
    def key(self) -> str:
        return self.folder.name.rsplit(".", 2)[0]

    @property
    def state(self) -> Path:
        return self.folder / "state"

    @property
    def ram(self) -> Path | None:
        return self.folder / "ram" if self.mode == "mapped" else None

    def problem(self) -> str | None:
        """None if this template can be restored; else why not."""
        if not self.state.is_file():
            return "its state file is gone"
        if self.ram is None:
            return None
        try:
            found = _identity(self.ram)
        except OSError as exc:
            return f"its RAM file is gone ({exc.strerror})"
        if found != self.ram_id:
            return "its RAM file changed after it was saved"
        return None


def key_for(stamp: str, memory_mb: int, vcpus: int, accel: str, mode: Mode) -> str:
    return f"{stamp}-{memory_mb}m-{vcpus}c-{accel}-{mode}"


def find(parent: Path, key: str) -> Template | None:
    """A saved template for `key` in `parent`, if there is one."""
    for folder in sorted(parent.glob(f"{key}.*.template")):
        template = load(folder)
        if template is not None:
            return template
    return None


def load(folder: Path) -> Template | None:
    try:
        meta = json.loads((folder / META).read_text())
        if meta["mode"] == "copy":
            return Template(folder, "copy")
        ino, size, mtime_ns = (int(n) for n in meta["ram_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Template(folder, "mapped", (ino, size, mtime_ns))


def new_folder(parent: Path, key: str) -> Path:
    """An empty folder to save a template into (published by `publish`)."""
    folder = parent / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    folder.mkdir(parents=True)
    return folder


def unmappable(folder: Path) -> str | None:
    """Why guest RAM cannot be a file in `folder` (None if it can): QEMU maps the file
    shared for the template and private for clones; some file systems refuse that."""
    probe = folder / "probe"
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, mmap.PAGESIZE)
            with mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED) as shared:
                shared[0] = 1
            with mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_PRIVATE) as private:
                private[0] = 2
            if os.pread(fd, 1, 0) != b"\x01":
                return "a private mapping of a file there wrote to the file"
        finally:
            os.close(fd)
            probe.unlink()
    except (OSError, ValueError) as exc:
        return str(exc)
    return None


def publish(tmp: Path, key: str, mode: Mode) -> Template:
    """Sync the saved files, record the RAM file's identity, and give the folder its name
    (blocking: call it in a thread)."""
    ram_id = None
    for name in ("state", "ram") if mode == "mapped" else ("state",):
        fd = os.open(tmp / name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if mode == "mapped":
        ram_id = _identity(tmp / "ram")
    meta = {"mode": mode, "ram_id": list(ram_id) if ram_id else None, "saved_at": time.time()}
    (tmp / META).write_text(json.dumps(meta) + "\n")
    final = tmp.parent / f"{key}.{uuid.uuid4().hex[:8]}.template"
    tmp.rename(final)
    _fsync_dir(tmp.parent)
    return Template(final, mode, ram_id)


def discard(folder: Path) -> None:
    """Delete a template (clones running from it keep their open mapping)."""
    shutil.rmtree(folder, ignore_errors=True)


def prune(parent: Path, stamp: str) -> None:
    """Delete templates of other builds of the image (another `stamp`), states in the
    earlier one-file layout, and unfinished folders of engines that died while saving."""
    for entry in parent.iterdir():
        name = entry.name
        other_build = name.endswith(".template") and not name.startswith(f"{stamp}-")
        unfinished = name.endswith(".tmp") and _age(entry) > STALE_TMP
        if name.endswith(".state") or other_build or unfinished:
            if entry.is_dir():
                discard(entry)
            else:
                _unlink(entry)


def _identity(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0
