"""Host folders shown read-only in a microVM (`VMSpec.mounts`: tools the engine installed,
such as Claude Code).

A guest cannot see the host's files, so each folder is packed once into a squashfs image
(`mksquashfs`, LZ4 like the root filesystem, every file owned by root), cached by the
folder's path and content, attached to the guest as one more read-only virtio-blk drive
(`readonly=on`, serial `swarm-mount-N`) and mounted by the VM's first command, which runs
as root in the guest: `mount -t squashfs -o ro,nodev,nosuid`. The guest image is unchanged.

A cached image is trusted only if it is whole: it is synced before it gets its name, then
a sidecar (`.<image>.ok`: inode, size, mtime) is written; before each use the sidecar must
match and the squashfs superblock must be there and claim the file's size. Anything else
(zeroed, truncated, garbage, or from before sidecars) is packed again. `mksquashfs` dies
with the engine (`PR_SET_PDEATHSIG`), and temporary files of dead engines are deleted.

The cache is bounded (`prune`, after each pack): the most recently used image of each
folder is kept, at most `keep` of them in all, and the rest are deleted with their
sidecars. An engine holds each image it hands to a VM (a shared `flock` on the open file,
taken before the image is checked, so the check and the hold see the same file) until QEMU
has opened it; a pruner deletes an image only under an exclusive `flock`, which it cannot
get while anyone holds the image, and under the lock of the image's folder, so no
engine's new image is deleted in its place. A running QEMU keeps its open copy of a
deleted image (the inode lives on until it is closed).

A VM that asks for mounts gets them or does not boot (`VMError`, one line): a step never
runs without the tools it asked for, and nothing of the host is shared with the guest but
a read-only copy. Such VMs boot cold (a saved template has other devices) and, under TCG,
get `-cpu max`: host tools are native programs built for today's CPUs (Claude Code needs
at least SSE4.2 and POPCNT; TCG's default `qemu64` model has neither).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from swarm_engine.errors import VMError
from swarm_engine.vm.base import VM
from swarm_engine.vm.proctree import die_with_parent, stale_tmp

log = logging.getLogger(__name__)

PACK_ARGS = ("-comp", "lz4", "-noappend", "-all-root", "-no-xattrs", "-quiet", "-no-progress")
"""How a folder is packed; part of each image's cache key (a change repacks)."""
MKSQUASHFS = "mksquashfs"
PACK_TIMEOUT = 900.0
MOUNT_TIMEOUT = 60.0
SQUASHFS_MAGIC = b"hsqs"
PAD = 4096
"""mksquashfs pads an image to a multiple of this (the superblock's `bytes_used` does not)."""
SERIAL_PREFIX = "swarm-mount-"
MAX_MOUNTS = 8
KEEP = 3
"""Images a cache folder keeps (`mounts_keep`): the most recently used of each host folder,
this many in all, besides any image held right now."""
IMAGE_NAME = re.compile(r"^(?P<stem>[^.].*-[0-9a-f]{8}-)[0-9a-f]{16}\.squashfs\Z")
"""A cached image: `<folder's name>-<hash of its path>-<hash of its content>.squashfs`."""
TCG_CPU = "max"
GUEST_BUSYBOX = "/opt/swarm/busybox"
"""Put into every guest by its init (guest/init.c): the mount needs nothing of the image."""
MOUNT_SCRIPT = r"""
bb="$0"; i=0
for target; do
    dev=
    for block in /sys/block/*; do
        if [ "$("$bb" cat "$block/serial" 2>/dev/null)" = "swarm-mount-$i" ]; then
            dev="/dev/${block##*/}"
        fi
    done
    [ -n "$dev" ] || { echo "no drive with serial swarm-mount-$i" >&2; exit 1; }
    "$bb" mkdir -p "$target" && "$bb" mount -t squashfs -o ro,nodev,nosuid "$dev" "$target" || exit 1
    i=$((i + 1))
done
"""
"""Run in the guest as root by busybox (as `$0`), with the guest paths as arguments, in
drive order."""


@dataclass(frozen=True)
class Disk:
    """One host folder as the guest gets it: a squashfs image on a read-only drive."""

    image: Path
    guest_path: str


def guest_path(path: str) -> str:
    """`path` if it is a normalized absolute path other than `/`; else `VMError`."""
    if (
        not path.startswith("/")
        or path == "/"
        or posixpath.normpath(path) != path
        or "\0" in path
        or "\n" in path
    ):
        raise VMError(f"cannot mount a host folder at {path!r} in a microVM: not an absolute path")
    return path


def pack(folder: Path, cache_dir: Path, *, keep: int = KEEP) -> Path:
    """The squashfs image of `folder` (see `hold`), not held: a pruner may delete it at
    any time after this returns. For callers that only need it packed."""
    image, held = hold(folder, cache_dir, keep=keep)
    held.close()
    return image


def hold(folder: Path, cache_dir: Path, *, keep: int = KEEP) -> tuple[Path, BinaryIO]:
    """The squashfs image of `folder`, packed now unless the cache has it for this exact
    content, and the image opened under a shared `flock`: no pruner deletes it until that
    file is closed. Written to a temporary file and renamed into place, under a lock, so
    engines sharing `cache_dir` never pack one folder twice or see half an image. Either
    way the cache is then pruned to `keep` images (`prune`): an image that was held when
    the last pack pruned is deleted by the next use of the cache once it is let go, not
    only by the next pack of a new image."""
    if not folder.is_dir():
        raise VMError(f"cannot show {folder} in a microVM: not a folder")
    real = folder.resolve()
    where = hashlib.sha256(str(real).encode()).hexdigest()[:8]
    stem = f"{_slug(real.name)}-{where}-"
    target = cache_dir / f"{stem}{_content_key(real)}.squashfs"
    held = _hold(target)
    if held is not None:
        prune(cache_dir, keep)  # (ours is held: never deleted by it)
        return target, held
    if shutil.which(MKSQUASHFS) is None:
        raise VMError(
            f"cannot show {folder} in a microVM: mksquashfs not found "
            "(apt-get install squashfs-tools)"
        )
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VMError(
            f"cannot show {folder} in a microVM: cannot create {cache_dir}: {exc.strerror}"
        ) from exc
    sweep(cache_dir)
    with _locked(_stem_lock(cache_dir, stem)):
        held = _hold(target)
        if held is not None:  # another engine packed it meanwhile
            prune(cache_dir, keep, locked=stem)
            return target, held
        why = damage(target)
        if why != "missing":
            log.warning("cached image %s is not whole (%s); packing it again", target, why)
        _unlink(_sidecar(target))
        tmp = cache_dir / f".{target.name}.{os.getpid()}.tmp"
        try:
            _mksquashfs(real, tmp)
            held = tmp.open("rb")
            fcntl.flock(held, fcntl.LOCK_SH)  # held from before it has its name
            os.fsync(held.fileno())
            os.replace(tmp, target)
            _fsync(cache_dir)
            _write_sidecar(target)
        except BaseException as exc:
            if held is not None:
                held.close()
            if isinstance(exc, OSError):
                raise VMError(f"cannot pack {folder} for a microVM into {target}: {exc}") from exc
            raise
        finally:
            _unlink(tmp)
        prune(cache_dir, keep, locked=stem)
    return target, held


def prune(cache_dir: Path, keep: int = KEEP, *, locked: str | None = None) -> int:
    """Delete cached images beyond the bound: every image but the most recently used (packed
    or held) of each host folder, and then all but the `keep` most recently used. An image
    someone holds, or whose folder another engine is packing, is left for a later prune;
    sidecars go with their images; temporary files and lock files are not touched.
    `locked`: the stem whose lock the caller holds. Returns how many images were deleted."""
    try:
        names = [(m, entry) for entry in cache_dir.iterdir() if (m := IMAGE_NAME.match(entry.name))]
    except OSError:
        return 0
    ranked = sorted(((_last_use(e), e.name, m["stem"], e) for m, e in names), reverse=True)
    seen: set[str] = set()
    removed = 0
    for _, _, stem, image in ranked:
        if stem not in seen and len(seen) < keep:
            seen.add(stem)
            continue
        seen.add(stem)
        if _remove(image, stem, locked):
            log.info("deleted cached image %s (mounts_keep %d)", image, keep)
            removed += 1
    return removed


def damage(image: Path) -> str | None:
    """None if the cached `image` is whole (its sidecar matches, its squashfs superblock
    claims its size); else what is wrong. Reads one file's stat, a sidecar and 96 bytes."""
    try:
        st = os.stat(image)
    except OSError:
        return "missing"
    try:
        recorded = json.loads(_sidecar(image).read_text())
    except (OSError, ValueError):
        return "no record that it was packed whole"
    if recorded != {"ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}:
        return "changed after it was packed"
    try:
        with image.open("rb") as fh:
            head = fh.read(96)
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if len(head) < 96 or head[:4] != SQUASHFS_MAGIC:
        return "no squashfs superblock"
    (used,) = struct.unpack_from("<Q", head, 40)
    if not used <= st.st_size < used + PAD:
        return f"its superblock says {used} bytes, the file has {st.st_size}"
    return None


def sweep(cache_dir: Path) -> int:
    """Delete temporary files of engines that died while packing (`.<name>.<pid>.tmp`,
    the pid gone). Returns how many were removed."""
    removed = 0
    with contextlib.suppress(OSError):
        for entry in cache_dir.glob(".*.tmp"):
            if stale_tmp(entry):
                _unlink(entry)
                removed += 1
    return removed


def pack_all(
    mounts: Sequence[tuple[str, str]],
    cache_dir: Path,
    holds: contextlib.ExitStack,
    *,
    keep: int = KEEP,
) -> tuple[Disk, ...]:
    """The drives for a VM's mounts (host folder, guest path), in order; each image is
    held (`hold`) until `holds` closes, which the caller does once QEMU has opened them."""
    if len(mounts) > MAX_MOUNTS:
        raise VMError(f"a microVM takes at most {MAX_MOUNTS} host folders, not {len(mounts)}")
    where = [guest_path(guest) for _, guest in mounts]  # refused before anything is packed
    disks = []
    for (host, _), at in zip(mounts, where, strict=True):
        image, held = hold(Path(host), cache_dir, keep=keep)
        holds.enter_context(held)
        disks.append(Disk(image, at))
    return tuple(disks)


def mount_argv(disks: Sequence[Disk]) -> list[str]:
    """The guest command that mounts every drive at its path (drive N has serial
    `swarm-mount-N`: device names depend on the kernel's probe order)."""
    paths = (d.guest_path for d in disks)
    return [GUEST_BUSYBOX, "sh", "-c", MOUNT_SCRIPT, GUEST_BUSYBOX, *paths]


def qemu_args(disks: Sequence[Disk]) -> list[str]:
    """One read-only drive per disk, after the root drive (which stays /dev/vda)."""
    args: list[str] = []
    for n, disk in enumerate(disks):
        file = str(disk.image).replace(",", ",,")  # QEMU's option syntax
        args += [
            "-drive", f"id=mount{n},file={file},format=raw,if=none,readonly=on",
            "-device", f"virtio-blk-device,drive=mount{n},serial={SERIAL_PREFIX}{n}",
        ]  # fmt: skip
    return args


def _mksquashfs(folder: Path, dest: Path) -> None:
    argv = [MKSQUASHFS, str(folder), str(dest), *PACK_ARGS]
    try:
        done = subprocess.run(
            argv, capture_output=True, timeout=PACK_TIMEOUT, check=False,
            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VMError(f"cannot pack {folder} for a microVM: {exc}") from exc
    if done.returncode != 0:
        why = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        raise VMError(
            f"cannot pack {folder} for a microVM: mksquashfs exited with {done.returncode}: "
            f"{why[-1] if why else 'no message'}"
        )


def _content_key(folder: Path) -> str:
    """A hash of how the folder is packed and of every entry's name, type, mode, size and
    modification time (a reinstall or an edit repacks it)."""
    h = hashlib.sha256(" ".join(PACK_ARGS).encode() + b"\n")
    try:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted([*dirs, *files]):
                path = os.path.join(root, name)
                st = os.lstat(path)
                rel = os.path.relpath(path, folder)
                h.update(f"{rel}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    except OSError as exc:
        raise VMError(f"cannot read {folder} to show it in a microVM: {exc}") from exc
    return h.hexdigest()[:16]


def _sidecar(image: Path) -> Path:
    return image.with_name(f".{image.name}.ok")


def _stem_lock(cache_dir: Path, stem: str) -> Path:
    """The lock held while one host folder's image is packed (or deleted)."""
    return cache_dir / f".{stem}lock"


def _hold(image: Path) -> BinaryIO | None:
    """`image` opened under a shared `flock` if it is whole and still has its name (a
    pruner may have deleted it, or a packer replaced it, between the open and the lock);
    else None. Marks it used now (its sidecar's mtime: `prune`'s order)."""
    try:
        held = image.open("rb")
    except OSError:
        return None
    try:
        fcntl.flock(held, fcntl.LOCK_SH)
        opened = os.fstat(held.fileno())
        if damage(image) is None and _same(opened, os.stat(image)):
            _touch(_sidecar(image))
            return held
    except OSError:
        pass
    held.close()
    return None


def _remove(image: Path, stem: str, locked: str | None) -> bool:
    """Delete `image` and its sidecar if nobody holds it (an exclusive `flock`, never
    waited for) and nobody packs its folder (its stem's lock, unless the caller has it)."""
    with contextlib.ExitStack() as stack:
        if stem != locked and not _try_lock(stack, _stem_lock(image.parent, stem)):
            return False
        try:
            victim = stack.enter_context(image.open("rb"))
            fcntl.flock(victim, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not _same(os.fstat(victim.fileno()), os.stat(image)):
                return False  # replaced since it was opened: the new one is not ours
        except OSError:  # gone, or held (EWOULDBLOCK)
            return False
        _unlink(_sidecar(image))  # first: without it, nobody trusts the image
        _unlink(image)
        return True
    return False  # pragma: no cover (mypy: the stack swallows nothing)


def _try_lock(stack: contextlib.ExitStack, path: Path) -> bool:
    try:
        fh = stack.enter_context(path.open("a+b"))
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _last_use(image: Path) -> int:
    """When `image` was last packed or held (its sidecar's mtime); 0 without a sidecar
    (damaged, or still being written, and then held by its writer)."""
    try:
        return os.stat(_sidecar(image)).st_mtime_ns
    except OSError:
        return 0


def _touch(path: Path) -> None:
    """Set `path`'s mtime to now, from the clock (finer than the file system's own stamps)."""
    now = time.time_ns()
    with contextlib.suppress(OSError):
        os.utime(path, ns=(now, now))


def _write_sidecar(image: Path) -> None:
    """Record the synced image's identity (written last: no sidecar, no trust)."""
    st = os.stat(image)
    side = _sidecar(image)
    tmp = side.with_name(f"{side.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(
            json.dumps({"ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        )
        _touch(tmp)  # packed now: `prune`'s order
        _fsync(tmp)
        os.replace(tmp, side)
    finally:
        _unlink(tmp)
    _fsync(image.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip(".-")[:48] or "folder"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


async def mount(vm: VM, disks: Sequence[Disk]) -> None:
    """Mount every drive in the freshly booted guest `vm`; `VMError` (one line) if not."""
    done = await vm.exec(mount_argv(disks), timeout=MOUNT_TIMEOUT)
    if not done.ok:
        lines = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        why = lines[-1] if lines else f"exit code {done.exit_code}"
        where = ", ".join(d.guest_path for d in disks)
        images = ", ".join(str(d.image) for d in disks)
        raise VMError(
            f"VM {vm.id}: cannot mount the host's read-only folders at {where}: {why} "
            f"(cached images: {images})"
        )
