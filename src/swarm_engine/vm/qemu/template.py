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

Engines sharing a snapshot folder make a template under a lock per key (`locked`): the
second one waits and uses the first one's. `template.json` also records the image's build
time, so saving a template deletes only templates of *older* builds (an engine still on
the previous build never deletes a newer build's templates), duplicates of its own key
but the newest, and folders whose `template.json` cannot be read.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import mmap
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from swarm_engine.vm.owner import pid_namespace
from swarm_engine.vm.proctree import pid_alive

Mode = Literal["mapped", "copy"]
META = "template.json"
STALE_TMP = 3600.0
"""A `*.tmp` folder this old is a template whose engine died while saving it."""
TMP_NAME = re.compile(r"(?P<key>.+)\.(?P<pid>[0-9]+)(?:-(?P<ns>[0-9]+))?\.[0-9a-f]{8}\.tmp")
"""An unfinished template's folder: `<key>.<pid>-<pid namespace>.<nonce>.tmp`, the pid and
pid namespace (the number in `/proc/self/ns/pid`) of the engine saving it; earlier
versions, and an engine that cannot read its namespace, leave the namespace out."""
LOCK_POLL = 0.05
"""How often a waiting engine retries the per-key lock (flock cannot be awaited)."""


@dataclass(frozen=True)
class Template:
    folder: Path
    mode: Mode
    ram_id: tuple[int, int, int] | None = None
    """(inode, size, mtime_ns) of `ram` when it was saved (mapped mode)."""
    built_at: str = ""
    """The image's build time (its manifest's `built_at`); empty in earlier templates."""
    saved_at: float = 0.0

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
    """The newest saved template for `key` in `parent`, if there is one (every engine
    picks the same one, so their clones share its pages)."""
    found = [t for t in map(load, parent.glob(f"{key}.*.template")) if t is not None]
    return max(found, key=lambda t: (t.saved_at, t.folder.name), default=None)


def load(folder: Path) -> Template | None:
    try:
        meta = json.loads((folder / META).read_text())
        built_at, saved_at = str(meta.get("built_at") or ""), float(meta.get("saved_at", 0))
        if meta["mode"] == "copy":
            return Template(folder, "copy", None, built_at, saved_at)
        ino, size, mtime_ns = (int(n) for n in meta["ram_id"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return Template(folder, "mapped", (ino, size, mtime_ns), built_at, saved_at)


@contextlib.asynccontextmanager
async def locked(parent: Path, key: str, deadline: float | None = None) -> AsyncIterator[None]:
    """Hold the lock for making `key`'s template (`flock` on `.<key>.lock`), shared by
    every engine using `parent`. Lock files stay (deleting one could let two holders in).
    Raises `TimeoutError` if the lock is not had by `deadline` (the event loop's clock;
    None: wait as long as it takes), `OSError` if the lock file cannot be made."""
    parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(parent / f".{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(LOCK_POLL)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def tmp_folder(parent: Path, key: str) -> Path:
    """A new name for a folder to save a template into (`TMP_NAME`: its owner, this
    process, is in its name; not made yet): known before it is made, so that whoever
    makes it can always delete it, and whose it is known the moment it exists."""
    ns = _namespace_number()
    owner = f"{os.getpid()}-{ns}" if ns else str(os.getpid())
    return parent / f"{key}.{owner}.{uuid.uuid4().hex[:8]}.tmp"


def new_folder(parent: Path, key: str) -> Path:
    """An empty folder to save a template into (published by `publish`)."""
    folder = tmp_folder(parent, key)
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


def space_problem(folder: Path, memory_mb: int) -> str | None:
    """Why a template of a `memory_mb` guest may not fit in `folder` (None if it fits):
    its RAM file or state can grow to the guest's memory size. A full disk otherwise shows
    only as a template VM that dies (QEMU gets SIGBUS writing its RAM file)."""
    try:
        st = os.statvfs(folder)
    except OSError as exc:
        return f"cannot check the free space in {folder}: {exc.strerror}"
    free_mb = st.f_bavail * st.f_frsize // (1 << 20)
    if free_mb < memory_mb:
        return (
            f"no space left for a template in {folder}: {free_mb} MB free, a "
            f"{memory_mb} MB guest may need up to {memory_mb} MB"
        )
    return None


def publish(tmp: Path, key: str, mode: Mode, built_at: str = "") -> Template:
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
    saved_at = time.time()
    meta = {
        "mode": mode,
        "ram_id": list(ram_id) if ram_id else None,
        "built_at": built_at,
        "saved_at": saved_at,
    }
    with (tmp / META).open("w") as fh:
        fh.write(json.dumps(meta) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    final = tmp.parent / f"{key}.{uuid.uuid4().hex[:8]}.template"
    tmp.rename(final)
    _fsync_dir(tmp.parent)
    return Template(final, mode, ram_id, built_at, saved_at)


def discard(folder: Path) -> None:
    """Delete a template (clones running from it keep their open mapping)."""
    shutil.rmtree(folder, ignore_errors=True)


def prune(parent: Path, stamp: str, built_at: str) -> None:
    """Delete what no engine of the image's build `stamp` (built at `built_at`) will use:
    templates of builds not newer than this one (another `stamp`; an engine still on an
    older build never deletes a newer build's), all but the newest template of each key of
    this build, folders whose `template.json` cannot be read, states in the earlier
    one-file layout, and unfinished folders of engines that died while saving. Running
    clones keep their open mapping of a deleted RAM file (its inode lives on)."""
    newest: dict[str, Template] = {}
    for entry in parent.iterdir():
        name = entry.name
        if name.endswith(".template"):
            template = load(entry)
            if template is None:
                discard(entry)  # unreadable metadata: never restored, never replaced
            elif not name.startswith(f"{stamp}-"):
                if template.built_at <= built_at:  # ISO 8601 UTC: compares as text
                    discard(entry)
            else:
                best = newest.get(template.key)
                if best is None:
                    newest[template.key] = template
                else:
                    older, newest[template.key] = sorted(
                        (best, template), key=lambda t: (t.saved_at, t.folder.name)
                    )
                    discard(older.folder)
        elif name.endswith(".tmp") and _abandoned(entry):
            discard(entry)
        elif name.endswith(".state"):
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


def sweep_unfinished(snapshots: Path) -> list[str]:
    """Delete the unfinished template folders (`TMP_NAME`) in `snapshots`' image folders
    whose engine is gone (`_abandoned`): an engine killed while it saved a template left
    one, up to its guest's memory in size. Never one whose owner runs, or records another
    pid namespace (judged by its age only). Links and other names are not touched.
    Returns the folders removed, as `<image>/<name>`; one that cannot be removed is left
    (and not named)."""
    removed: list[str] = []
    try:
        parents = [p for p in snapshots.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return removed
    for parent in parents:
        with contextlib.suppress(OSError):
            for entry in parent.iterdir():
                if TMP_NAME.fullmatch(entry.name) is None or entry.is_symlink():
                    continue
                if entry.is_dir() and _abandoned(entry):
                    discard(entry)
                    if not os.path.lexists(entry):
                        removed.append(f"{parent.name}/{entry.name}")
    return removed


def _abandoned(folder: Path) -> bool:
    """An unfinished folder (`TMP_NAME`) whose engine is gone, or older than `STALE_TMP`.
    Its pid is judged only when it was recorded in this pid namespace (or in none, as
    earlier versions did; `owner.owner_of`'s rule): another namespace's pid means nothing
    here, so a live engine of a container sharing the folder never loses its folder."""
    found = TMP_NAME.fullmatch(folder.name)
    if found is not None:
        ns = found["ns"]
        here = ns is None or ns == _namespace_number()
        if here and not pid_alive(int(found["pid"])):
            return True
    return _age(folder) > STALE_TMP


def _namespace_number() -> str:
    """The number of this process's pid namespace (`pid:[4026531836]`), "" if unknown."""
    return "".join(c for c in pid_namespace() if c.isdigit())


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0
