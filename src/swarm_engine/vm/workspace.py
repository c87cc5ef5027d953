"""A process VM's workspace folder on the host: made (`prepare_folder`, a filesystem of
its own when capped: `vm/diskcap.py`), measured against its disk limits (`disk_usage`),
read from without trusting what a step left there (`read_regular_file`) and deleted
(`remove_folder`, which the qemu backend uses for its VM folders too).
"""

from __future__ import annotations

import contextlib
import encodings.unicode_escape  # noqa: F401  (loaded now: see remove_folder)
import errno
import os
import shutil
import stat
import subprocess
from pathlib import Path

from swarm_engine.errors import VMError
from swarm_engine.vm.base import MAX_FILE_BYTES
from swarm_engine.vm.bwrap import DISK_SHORTAGES, SHORTAGES
from swarm_engine.vm.diskcap import IMAGE_NAME, Template, mount_image, mounted_workspace, unmount
from swarm_engine.vm.owner import write_owner


def prepare_folder(
    folder: Path, isolated: bool, host_uid: int | None, image: Template | None = None
) -> None:
    """A new VM's folder and its `workspace/` (owned by `host_uid` when given, private when
    isolated): with `image`, a filesystem of its own (`vm/diskcap.py`). Nothing is left
    when it fails. Raises the `OSError` of a host shortage (tried again from the start),
    `VMError` (one line) for a workspace that cannot be mounted."""
    workspace = folder / "workspace"
    folder.mkdir(parents=True, exist_ok=False)  # one mkdir each when the root is there
    try:
        write_owner(folder, as_file=False)  # before it is mounted: whose, for a reaper
        workspace.mkdir()
        if image is not None:
            try:
                image.write(folder / IMAGE_NAME)
                mount_image(folder / IMAGE_NAME, workspace)
            except OSError as exc:
                if exc.errno in SHORTAGES | DISK_SHORTAGES:  # waited out (vm/shortage.py)
                    raise
                raise VMError(
                    f"cannot make the workspace's filesystem of disk_mb: {exc.strerror}"
                ) from exc
            (workspace / "lost+found").rmdir()  # the step's files alone
        if isolated:
            workspace_for(workspace, host_uid)
    except BaseException:  # not left half made (a shortage is tried again from the start)
        _unmake(folder, workspace)
        raise


def workspace_for(workspace: Path, host_uid: int | None) -> None:
    """Make a sandboxed VM's `workspace` its own: owned by `host_uid` when given, private."""
    if host_uid is not None:
        os.chown(workspace, host_uid, host_uid)
    os.chmod(workspace, 0o700)


def _unmake(folder: Path, workspace: Path) -> None:
    """Undo a `prepare_folder` cut short, with no file descriptor (out of them, `rmtree`
    could not list the folder, and the next try would find it there)."""
    with contextlib.suppress(OSError):
        if os.path.ismount(workspace):
            unmount(workspace)
    with contextlib.suppress(OSError):
        (folder / IMAGE_NAME).unlink()
    for made in (workspace, folder):
        with contextlib.suppress(OSError):
            made.rmdir()
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)


def resolve_inside(root: str, relpath: str) -> str | None:
    """`os.path.realpath(root + "/" + relpath)`, or None when that leads outside `root`.

    `root` is a real path already (no symlink in it) and `relpath` a normalised relative
    path (`safe_relpath`: no `..`). As `realpath` does, symlinks are followed and parts
    that do not exist are kept; unlike it, the parts of `root` are not looked at again:
    one `lstat` per part of `relpath` (a symlink costs one `realpath` of its own). Each
    file call of a worker thread lets go of the GIL, so on a busy engine they cost CPU.
    """
    real = root
    for name in relpath.split("/"):
        if name in ("", "."):
            continue
        step = os.path.join(real, name)
        try:
            link = stat.S_ISLNK(os.lstat(step).st_mode)
        except OSError:  # missing (or unreadable): kept as it is, as realpath does
            link = False
        real = os.path.realpath(step) if link else step
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        return None
    return real


def write_file(
    workspace: Path,
    target: Path,
    shown: str,
    data: bytes,
    mode: int,
    owner: int | None,
    capped: str | None = None,
) -> None:
    """Write `data` to `target` (a path inside `workspace`, checked by the caller), with
    `mode`, owned up to the workspace by `owner` when given (the sandbox's own uid); again,
    if called again (nothing is appended). Raises `VMError` (`shown` names the file), or
    the `OSError` of a host shortage before the file was opened, or that of its folder.
    In a capped workspace (`capped` names its limits) no room is the workspace's own
    limit, not the host's: a `VMError` at once, never waited out."""
    try:
        _write_file(workspace, target, shown, data, mode, owner)
    except OSError as exc:
        if capped is not None and exc.errno in DISK_SHORTAGES:
            raise VMError(f"{shown}: no room for it in the workspace ({capped})") from exc
        raise


def _write_file(
    workspace: Path, target: Path, shown: str, data: bytes, mode: int, owner: int | None
) -> None:
    if target.is_dir():
        raise VMError(f"{shown}: is a folder")
    if target.parent != workspace:  # the workspace itself is there from the VM's boot
        target.parent.mkdir(parents=True, exist_ok=True)
    # never blocking: a FIFO the step put there would hold the open until a reader comes,
    # and the thread doing this is waited for by a cancel (vm/settled.py)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(target, flags, mode)
    except OSError as exc:
        if exc.errno in SHORTAGES | DISK_SHORTAGES:  # waited out (vm/shortage.py)
            raise
        if exc.errno == errno.ENXIO:  # a FIFO (or socket) with no reader
            raise VMError(f"{shown}: not a regular file (a pipe, socket or device)") from exc
        raise VMError(f"{shown}: cannot write: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VMError(f"{shown}: not a regular file (a pipe, socket or device)")
        fh.write(data)
    os.chmod(target, mode)
    if owner is not None:  # the file and each folder between it and the workspace
        parts = target.relative_to(workspace).parts
        for depth in range(len(parts), 0, -1):
            os.lchown(workspace.joinpath(*parts[:depth]), owner, owner)


def remove_folder(folder: Path) -> str | None:
    """Delete `folder` and everything in it (never following links), its workspace's
    filesystem unmounted first (`vm/diskcap.py`). Returns None once it is gone, else one
    line saying what is left and why (e.g. out of file descriptors)."""
    errors: list[str] = []
    mounted = mounted_workspace(folder)
    unmounted: str | None = None
    if mounted is not None:
        try:
            unmount(mounted)
        except OSError as exc:  # e.g. busy: what is inside says why, else this does
            unmounted = f"{mounted}: {exc.strerror}"

    def note(function: object, path: object, info: tuple[type, BaseException, object]) -> None:
        exc = info[1]
        if isinstance(exc, FileNotFoundError):  # gone already: nothing to delete there
            return
        if not errors:  # a name inside is the step's own: shown escaped, on one line (the
            # codec is imported with this module: out of fds, importing it would fail here)
            shown = str(path).encode("unicode_escape", "backslashreplace").decode("ascii")
            why = (exc.strerror if isinstance(exc, OSError) else None) or exc
            errors.append(f"{shown[:300]}: {why}")

    try:
        try:
            shutil.rmtree(folder, onerror=note)
        except RecursionError:  # rmtree recurses (3.11): a chain of folders too deep for it
            errors.clear()
            errors.extend(_remove_with_rm(folder))
        if not os.path.lexists(folder):
            return None
    except Exception as exc:  # never raised out of destroy, reap, cleanup or start
        errors.insert(0, f"{type(exc).__name__}: {exc}")
    return f"could not delete VM folder {folder}: {(errors or [unmounted or 'still there'])[0]}"


RM_SECONDS = 300.0  # what `rm -rf` gets to delete one VM folder


def _remove_with_rm(folder: Path) -> list[str]:
    """Delete `folder` with coreutils' `rm` (no depth limit, never following links, never
    leaving its filesystem): what went wrong, as at most one line."""
    try:
        done = subprocess.run(
            ["rm", "-rf", "--one-file-system", "--", os.fspath(folder)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=RM_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return [f"rm -rf: {exc}"]
    if done.returncode == 0:
        return []
    said = done.stderr.decode("utf-8", "backslashreplace").strip().splitlines()
    return [f"rm -rf: {(said or ['exit code ' + str(done.returncode)])[0][:300]}"]


class UncountableError(VMError):
    """A folder in a workspace that cannot be listed: what it holds cannot be counted."""


def disk_usage(folder: Path, stop_above: int, max_entries: int) -> tuple[int, int]:
    """Bytes allocated under `folder` (not following links) and the entries (files,
    folders, links) there, counted until past either bound.

    Raises `UncountableError` (one line, the folder's path relative to `folder`) for a
    folder that cannot be listed, e.g. one a step made `chmod 000`, seen by an engine that
    is not root: its limits cannot be checked, so the caller fails closed. A folder that
    is gone by the time it is listed (the command deleted it) is skipped, and so is one
    the host is too short of file descriptors or memory to list now (the next count, or
    the command's end, counts it again)."""

    def unlisted(exc: OSError) -> None:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR) or exc.errno in SHORTAGES:
            return
        where = os.path.relpath(exc.filename, folder) if exc.filename else "?"
        shown = where.encode("unicode_escape", "backslashreplace").decode("ascii")[:300]
        raise UncountableError(f"{shown}: {exc.strerror or exc}")

    total = entries = 0
    stack = [os.fspath(folder)]  # no recursion: a chain of any depth is counted (or fails)
    while stack:
        try:
            with os.scandir(stack.pop()) as listing:
                for entry in listing:
                    entries += 1
                    with contextlib.suppress(OSError):
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    if total > stop_above or entries > max_entries:
                        return total, entries
        except OSError as exc:
            unlisted(exc)
    return total, entries


def read_regular_file(target: Path, shown: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file a step left in its workspace, at most `limit` of them.

    Opened without following a final symlink and without blocking, so a FIFO or device
    the step put there is refused instead of hanging the engine; a file over `limit`
    (a sparse 2 GB file costs the step no disk) is refused too. Raises `VMError`, or the
    `OSError` of a host shortage (`SHORTAGES`: out of fds or memory) before it opened the
    file, for the caller to wait out (`vm/shortage.py`).
    """
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise VMError(f"{shown}: no such file in the VM") from exc
    except OSError as exc:
        if exc.errno in SHORTAGES:
            raise
        raise VMError(f"{shown}: cannot read: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise VMError(f"{shown}: is a folder")
        if not stat.S_ISREG(info.st_mode):
            raise VMError(f"{shown}: not a regular file (a pipe, socket or device)")
        if info.st_size > limit:
            raise VMError(f"{shown}: {info.st_size} bytes, over the {limit}-byte limit")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > limit:
                raise VMError(f"{shown}: over the {limit}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
