"""The hard cap on a process VM's workspace: a filesystem of its own, of `disk_mb`.

With `disk_cap = "mount"` (the default) each workspace is an ext4 filesystem sized to hold
`disk_mb` MiB of data and `max_files` files (plus a sliver, so that the count in
`vm/workspace.py` sees a filled one as over its limit and says so), in a sparse image file
in the VM's folder (`workspace.img`), on a loop device, mounted on `workspace/` (nosuid,
nodev). The kernel refuses a write past it (`No space left on device`), however fast it
comes (`fallocate`, several processes at once): the 50 ms count stays as the line that
names the limit, no longer as the bound. The image is sparse: it takes host disk for what
is written in it, at most its size, so the VMs of an engine take at most `max_vms` x that.
A VM boots only where the host's disk has room for a full image then (else the boot waits,
as for any shortage of the host); the room is not reserved (reserving it, `fallocate`,
cost ~4 ms more per VM), so VMs that fill their workspaces at once on a host without room
for all of them may find the host's disk full under them (I/O errors in the workspace).

The filesystem is made once per backend (`Template.build`, `mke2fs` into a memory file,
measured by mounting it once); each VM copies it (a few hundred KiB: ~0.2 ms), attaches
a loop device that goes with its mount (autoclear) and mounts it (~1 ms; unmounting ~1
ms). Mounting needs root with CAP_SYS_ADMIN, loop devices and `mke2fs`: where that cannot
be had, `Template.build` raises `DiskCapError` with one line, and the backend refuses
every step (fail closed), unless the host sets `disk_cap = "measured"`.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from swarm_engine.errors import VMError
from swarm_engine.vm.bwrap import DISK_SHORTAGES, SHORTAGES
from swarm_engine.vm.owner import write_owner

MIB = 1 << 20
BLOCK = 4096
IMAGE_NAME = "workspace.img"
"""The image's name in the VM's folder, beside `workspace/` (which the sandbox sees)."""
SLACK = 64 * 1024
"""Room past `disk_mb`: a workspace the kernel stopped is counted over `disk_mb`."""
MOST_SLACK = MIB
"""At most this much room past `disk_mb` (the sizing is tried again until it fits)."""
SPARE_INODES = 16
"""Inodes past `max_files` (the filesystem's own: root, reserved, lost+found)."""
INODE_BYTES = 256
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_AUTOCLEAR = 4
LOOP_CONFIG_BYTES = 304
"""`struct loop_config`: fd, block_size, `struct loop_info64` (232 bytes), 8 reserved u64."""
LO_FLAGS_OFFSET = 8 + 5 * 8 + 3 * 4
MS_NOSUID = 2
MS_NODEV = 4
MNT_DETACH = 2
MNT_OPTIONS = b"noinit_itable"
"""The inode tables stay unwritten (the kernel would zero them, into the host's disk)."""
SCRATCH_PREFIX = "swarm-diskcap-"
"""The folder, in the VMs' folder, where a new image is sized: its owner recorded in it
(`vm/owner.py`), so that `cleanup` deletes one an engine killed meanwhile left."""
LOOP_TRIES = 64
SYSTEM_MKFS = ("/usr/sbin/mke2fs", "/sbin/mke2fs")
"""Where mke2fs is when the engine's PATH leaves out the system's sbin folders."""
ROOT_FIX = (
    "make sure the engine has CAP_SYS_ADMIN and loop devices, and that this host's mke2fs"
    " can make a filesystem of [backend_options.process] disk_mb and max_files (lower them"
    ' if not), or set disk_cap = "measured" to only measure the workspace every 50 ms'
)
"""The fix for a root engine that cannot make the filesystem (root is not the fix)."""
FIX = (
    "run the engine as root (with CAP_SYS_ADMIN, loop devices and mke2fs) to give each "
    "workspace a filesystem of disk_mb, or set [backend_options.process] disk_cap = "
    '"measured" to only measure it every 50 ms (a fast writer then overshoots disk_mb '
    "by what it writes meanwhile)"
)


def how_to_fix(problem: DiskCapError | None = None) -> str:
    """What to do when the workspace's cap cannot be had: the problem's own fix when it
    has one, else root, but only for an engine that does not run as root."""
    if problem is not None and problem.fix is not None:
        return problem.fix
    return ROOT_FIX if os.geteuid() == 0 else FIX


class DiskCapError(VMError):
    """The workspace's hard cap cannot be had on this host (one line: why); `fix`, what
    to do, when it is not `how_to_fix`'s."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
        lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _libc = lib
    return _libc


def _errno_error(what: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what}: {os.strerror(code)}")


class Template:
    """An empty filesystem image in a memory file, and where its data is (the rest is
    holes): what each VM's `workspace.img` starts as."""

    def __init__(self, fd: int, size: int, extents: list[tuple[int, int]], avail: int) -> None:
        self.fd = fd
        self.size = size
        self.extents = extents
        self.avail = avail
        """Bytes the filesystem gives, as mounted (`statvfs`)."""
        self.fresh: tuple[int, int] | None = None
        """Its free blocks and free inodes as a VM's workspace starts (`lost+found`
        deleted): what an emptied workspace must count again to be kept (`vm/spares.py`)."""
        self.root_flags: int | None = None
        """Its root folder's inode flags (`lsattr`) as made: what an emptied workspace's
        root is set back to (`vm/spares.py`)."""

    @classmethod
    def build(cls, disk_mb: int, max_files: int, scratch_in: Path | None = None) -> Template:
        """An image with room for `disk_mb` MiB (at most `MOST_SLACK` more) and
        `max_files` files, checked by mounting it once in a folder made in `scratch_in`
        (the VMs' folder: the disk their workspaces are on; TMPDIR when None). Blocking
        (`mke2fs`, mounts: ~20 ms). Raises `DiskCapError` (one line) where it cannot be
        had here, `VMError` for a shortage of the host now (no room on that disk, out of
        fds or memory): not a verdict, tried again later."""
        if os.geteuid() != 0:
            raise DiskCapError("the engine does not run as root, so it cannot mount workspaces")
        if not os.path.exists("/dev/loop-control"):
            raise DiskCapError("this host has no loop devices (/dev/loop-control)")
        mkfs = shutil.which("mke2fs") or next(filter(os.path.isfile, SYSTEM_MKFS), None)
        if mkfs is None:
            raise DiskCapError("mke2fs (e2fsprogs) is not installed")
        want = disk_mb * MIB + SLACK
        inodes = max_files + SPARE_INODES
        size = _round(want + inodes * INODE_BYTES + min(want // 49, 16 * MIB) + 2 * MIB)
        try:
            if scratch_in is not None:
                scratch_in.mkdir(parents=True, exist_ok=True)
            _could_hold(scratch_in or Path(tempfile.gettempdir()), size)
            return cls._sized(mkfs, want, inodes, size, disk_mb, scratch_in)
        except DiskCapError as exc:  # name the settings it was made for
            raise DiskCapError(
                f"{exc} (disk_mb = {disk_mb}, max_files = {max_files})", exc.fix
            ) from exc
        except OSError as exc:
            if exc.errno in SHORTAGES:  # the host, for now: not a verdict (tried again)
                raise VMError(
                    f"cannot check the workspace's disk cap now: {exc.strerror} (the engine"
                    " is short of file descriptors, memory or processes: raise ulimit -n, or"
                    " wait)"
                ) from exc
            if exc.errno in DISK_SHORTAGES:  # the host's disk, for now: tried again later
                where = exc.filename or scratch_in or tempfile.gettempdir()
                raise VMError(
                    f"cannot check the workspace's disk cap now: no room for a"
                    f" {-(-size // MIB)} MiB image in {where} ({exc.strerror}); free"
                    " some, or lower disk_mb"
                ) from exc
            raise DiskCapError(f"cannot make a workspace's filesystem: {exc}") from exc

    @classmethod
    def _sized(
        cls, mkfs: str, want: int, inodes: int, size: int, disk_mb: int, where: Path | None
    ) -> Template:
        scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=where))
        try:
            write_owner(scratch, as_file=False)  # whose it is, for a reaper (engine/reaper.py)
            for _ in range(8):
                template = cls._mkfs(mkfs, size, inodes)
                try:
                    template.avail = template._measure(scratch)
                except BaseException:
                    template.close()
                    raise
                if want <= template.avail <= want + MOST_SLACK:
                    return template
                template.close()
                size = _round(
                    size + want - template.avail + (BLOCK if template.avail < want else 0)
                )
        finally:
            remove_scratch(scratch)
        raise DiskCapError(f"no filesystem image of {disk_mb} MiB could be sized here")

    @classmethod
    def _mkfs(cls, mkfs: str, size: int, inodes: int) -> Template:
        fd = os.memfd_create("swarm-workspace", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            argv = [mkfs, "-q", "-F", "-t", "ext4", "-b", str(BLOCK), "-I", str(INODE_BYTES),
                    "-O", "^has_journal,^resize_inode", "-m", "0", "-N", str(inodes),
                    "-E", "lazy_itable_init=1,nodiscard", f"/proc/self/fd/{fd}"]  # fmt: skip
            done = subprocess.run(
                argv, pass_fds=(fd,), capture_output=True, timeout=60, check=False
            )
            if done.returncode != 0:
                why = done.stderr.decode(errors="replace").strip().splitlines()
                raise DiskCapError(f"mke2fs fails: {why[-1] if why else done.returncode}")
            return cls(fd, size, _extents(fd), 0)
        except subprocess.TimeoutExpired as exc:
            os.close(fd)
            raise DiskCapError("mke2fs did not finish within 60 s") from exc
        except BaseException:
            os.close(fd)
            raise

    def _measure(self, scratch: Path) -> int:
        image, mnt = scratch / IMAGE_NAME, scratch / "mnt"
        mnt.mkdir(exist_ok=True)
        self.write(image)
        try:
            mount_image(image, mnt)
        except OSError as exc:
            if exc.errno in SHORTAGES:
                raise
            raise DiskCapError(f"cannot mount a workspace's filesystem: {exc.strerror}") from exc
        try:
            info = os.statvfs(mnt)
            (mnt / "lost+found").rmdir()  # as `prepare_folder` does
            fresh = os.statvfs(mnt)
            self.fresh = (fresh.f_bfree, fresh.f_ffree)
            self.root_flags = folder_flags(mnt)
            return info.f_bavail * info.f_frsize
        finally:
            unmount(mnt)
            image.unlink()

    def write(self, path: Path) -> None:
        """A new file `path` holding this image, sparse (its holes left holes: ~0.2 ms),
        where the host's disk has room for all of it now. Raises `OSError` (ENOSPC: no
        room for a full workspace now, a shortage of the host to wait out), `DiskCapError`
        where that disk could never hold it."""
        room = _could_hold(path.parent, self.size)
        if room.f_bavail * room.f_frsize < self.size:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path.parent))
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(out, self.size)
            for offset, length in self.extents:
                end = offset + length
                while offset < end:
                    chunk = os.pread(self.fd, min(end - offset, MIB), offset)
                    if not chunk:
                        break
                    offset += os.pwrite(out, chunk, offset)
        finally:
            os.close(out)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _could_hold(folder: Path, size: int) -> os.statvfs_result:
    """The room on `folder`'s disk; raises `DiskCapError` where that disk is smaller in
    all than `size` bytes (a verdict: never a shortage to wait out)."""
    room = os.statvfs(folder)
    if room.f_blocks * room.f_frsize < size:
        raise DiskCapError(
            f"the disk of {folder} holds {room.f_blocks * room.f_frsize // MIB} MiB in all,"
            f" less than one workspace's image ({-(-size // MIB)} MiB)",
            "lower [backend_options.process] disk_mb, or give the engine's home a larger"
            ' disk, or set disk_cap = "measured" to only measure the workspace every 50 ms',
        )
    return room


FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FITRIM = 0xC0185879


def used_since(workspace: Path, fresh: tuple[int, int]) -> tuple[int, int]:
    """Bytes and inodes (files, folders, links) used in a mounted workspace beyond what a
    new one uses (`Template.fresh`: its free blocks and inodes as it starts), read from
    its filesystem's counters (`statvfs`): one system call, whatever the step left in it
    (a walk of 100,000 files costs the engine a quarter of a core at every count), and no
    depth of folders it cannot count. Hard links count once, as on the disk. Raises
    `OSError` when the counters cannot be read (the caller fails closed)."""
    if not os.path.ismount(workspace):  # its filesystem's counters, no other's
        raise OSError(errno.ENOENT, "the workspace is not mounted", str(workspace))
    info = os.statvfs(workspace)
    blocks, inodes = fresh
    return max(blocks - info.f_bfree, 0) * info.f_frsize, max(inodes - info.f_ffree, 0)


def folder_flags(folder: Path, set_to: int | None = None) -> int:
    """The inode flags of `folder` (`lsattr -d`), first set to `set_to` when given.
    Raises `OSError`."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if set_to is not None:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("=i", set_to))
        got = fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("=i", 0))
        flags: int = struct.unpack("=i", got)[0]
        return flags
    finally:
        os.close(fd)


def trim(mount_point: Path) -> None:
    """Give the host's disk back the blocks its filesystem no longer uses (`FITRIM`: the
    loop device punches them out of the image). Raises `OSError` (EOPNOTSUPP where the
    image's disk cannot)."""
    fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, FITRIM, bytearray(struct.pack("=QQQ", 0, (1 << 64) - 1, 0)))
    finally:
        os.close(fd)


def _round(size: int) -> int:
    return max(BLOCK, -(-size // BLOCK) * BLOCK)


def _extents(fd: int) -> list[tuple[int, int]]:
    """Where a file's data is: (offset, length) between its holes."""
    found: list[tuple[int, int]] = []
    offset = 0
    while True:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data past `offset`
                return found
            raise
        offset = os.lseek(fd, start, os.SEEK_HOLE)
        found.append((start, offset - start))


def mount_image(image: Path, target: Path) -> None:
    """Mount the ext4 `image` on `target` through a free loop device that is let go with
    the mount (autoclear). Raises `OSError` (nothing left attached or mounted)."""
    control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
        try:
            device, loop = _attach(control, backing)
        finally:
            os.close(backing)
        try:  # the loop device lives as long as the mount, or until this close
            done = _lib().mount(
                device.encode(), os.fsencode(target), b"ext4", MS_NOSUID | MS_NODEV, MNT_OPTIONS
            )
            if done != 0:
                raise _errno_error("mount")
        finally:
            os.close(loop)
    finally:
        os.close(control)


def _attach(control: int, backing: int) -> tuple[str, int]:
    config = bytearray(LOOP_CONFIG_BYTES)
    struct.pack_into("=I", config, 0, backing)
    struct.pack_into("=I", config, LO_FLAGS_OFFSET, LO_FLAGS_AUTOCLEAR)
    for _ in range(LOOP_TRIES):  # another process may take the free device first
        number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
        device = f"/dev/loop{number}"
        loop = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(loop, LOOP_CONFIGURE, bytes(config))
        except OSError as exc:
            os.close(loop)
            if exc.errno == errno.EBUSY:
                continue
            raise
        return device, loop
    raise OSError(errno.EBUSY, "no loop device stayed free")


def unmount(target: Path) -> None:
    """Unmount `target` (its loop device goes with it). Busy (a killed command's process
    not yet gone, bubblewrap's outer process having its cwd there), it is detached at once
    and goes, with its loop device, as the last of them does (`MNT_DETACH`). Raises
    `OSError`."""
    path = os.fsencode(target)
    if _lib().umount2(path, 0) == 0:
        return
    if ctypes.get_errno() != errno.EBUSY or _lib().umount2(path, MNT_DETACH) != 0:
        raise _errno_error("umount")


def remove_scratch(scratch: Path) -> None:
    """Delete a sizing folder (`SCRATCH_PREFIX`), its `mnt/` unmounted first (an engine
    killed as it measured an image left it mounted). Raises nothing: what is left is
    still there for the next `cleanup`."""
    mnt = scratch / "mnt"
    if os.path.ismount(mnt):
        try:
            unmount(mnt)
        except OSError:
            return  # (never deleted through a mount: the image's files would go)
    shutil.rmtree(scratch, ignore_errors=True)


def mounted_workspace(folder: Path) -> Path | None:
    """`folder/workspace` when it is a mount point (a capped workspace), else None."""
    workspace = folder / "workspace"
    return workspace if os.path.ismount(workspace) else None
