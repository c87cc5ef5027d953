"""Agent package folders on disk, replaced atomically for their readers.

    <packages_dir>/<name>/<version>            a symlink to the version's current copy
    <packages_dir>/<name>/.<version>.<16 hex>  one copy, whole before the link names it;
                                               the hex: its digest's first 16 (`content_name`)
    <packages_dir>/<name>/.lock                held while a registration swaps the link
    <packages_dir>/.trash/<16 hex>             a copy on its way out
    <packages_dir>/.staging-<random>           a registration's copy being made (locked)
    <packages_dir>/tmp<8 random>               the same, made by an older version (no lock)

`agent register --force` writes each package into a copy of its own, then renames a new
symlink over `<version>` (one `rename`: a reader resolves either the old copy or the new
one, never a mix and never nothing). A reader holds a shared `flock` on the copy it reads
(`reading`); a copy no longer linked is moved to the trash and deleted only while
nobody holds it (`retire`, an exclusive lock taken without waiting), else a later
registration of that name, or `cleanup` (`sweep`), does it. A `<version>` that is a folder itself (registered
before this layout) is exchanged with the link in one `renameat2(RENAME_EXCHANGE)`.

A run holds each copy it was planned with the same way for as long as it runs (`hold`,
`HeldCopy`): a registration with other files meanwhile links its new copy for the runs
planned after it, and the held copy stays, found by its digest's name (`content_name`)
or wherever it was moved in its name's folder (`HeldCopy.where`), until the run ends and
a later registration or `sweep` retires it."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

TRASH = ".trash"
LOCK = ".lock"
STAGING = ".staging-"
STAGING_GRACE = 60.0
"""Seconds a staging folder nobody holds is left alone (it may be just made, not yet
locked) before `sweep` removes it (a registration killed while it copied)."""
LEGACY_STAGING = re.compile(r"tmp[a-z0-9_]{8}\Z")
"""What `tempfile.mkdtemp(dir=packages_dir)` named the staging folder of a registration
before `.staging-*` (its `pkg` inside, the package being copied); no version since makes
one (`staging` names its folders by `STAGING`)."""
LEGACY_STAGING_AGE = 24 * 3600.0
"""Seconds since an older version's staging folder (or its `pkg`) last changed before
`sweep` removes it. Such a folder has no lock to tell a live registration from a killed
one: its age is the only sign. A registration's copy (at most 64 MiB and 2,000 files
today, a local copy) and its store transaction (a busy store: `busy_timeout`) take
seconds to minutes, and an older version still registering during an upgrade touches
`pkg` as it copies; a day is far past all of it. Waiting costs only the disk space of a
dead copy for that day."""
_HEX = frozenset("0123456789abcdef")


def copy_name(version: str) -> str:
    """A new copy's folder name for `version` (hidden: no name or version starts with a dot)."""
    return f".{version}.{os.urandom(8).hex()}"


def content_name(version: str, digest: str | None) -> str | None:
    """The copy name `install` gives `version`'s package whose files have `digest`
    (`sha256:<hex>`, `agents.files.package_digest`): its first 16 hex digits, so that a
    run finds a copy of the files it was planned with by their digest, linked or not.
    None for a digest not of that form. (Only a name: a reader checks the files.)"""
    hexpart = (digest or "").removeprefix("sha256:")[:16]
    if len(hexpart) != 16 or not set(hexpart) <= _HEX:
        return None
    return f".{version}.{hexpart}"


def is_copy_of(entry: str, version: str) -> bool:
    """Whether the folder entry `entry` is a copy of `version`'s package (`copy_name`)."""
    prefix = f".{version}."
    tail = entry[len(prefix) :]
    return entry.startswith(prefix) and len(tail) == 16 and set(tail) <= _HEX


def is_package_folder(entry: str, version: str) -> bool:
    """Whether `<name>/<entry>` may hold `version`'s package: a copy, or a folder of the
    layout before copies (`<name>/<version>` itself)."""
    return entry == version or is_copy_of(entry, version)


def install(
    staged: Path, packages_dir: Path, name: str, version: str, digest: str | None = None
) -> None:
    """Make the whole folder `staged` (on the same file system) `name@version`'s package:
    moved in as a new copy (named by `digest`, `content_name`, unless a copy of that name
    is still there: then a random one), then the link renamed over the old one; copies
    nobody reads or holds any more are retired."""
    folder = packages_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / LOCK):
        copy = content_name(version, digest)
        if copy is None or os.path.lexists(folder / copy):
            copy = copy_name(version)
        staged.rename(folder / copy)
        link = folder / version
        new_link = folder / copy_name(version)  # a copy's name: retired if left behind
        os.symlink(copy, new_link)
        try:
            os.replace(new_link, link)
        except IsADirectoryError:  # a folder of the layout before copies
            _exchange(new_link, link)
        for entry in os.listdir(folder):
            if is_copy_of(entry, version) and entry != copy:
                retire(folder / entry, packages_dir / TRASH)
    _empty_trash(packages_dir / TRASH)


def _is_any_copy(entry: str) -> bool:
    """Whether `entry` has a copy's name (`copy_name`) for some version."""
    stem, dot, tail = entry.rpartition(".")
    return (
        entry.startswith(".")
        and bool(dot)
        and len(stem) > 1
        and len(tail) == 16
        and set(tail) <= _HEX
    )


@contextlib.contextmanager
def staging(packages_dir: Path) -> Iterator[Path]:
    """A new folder in `packages_dir` to copy a package into, held (a shared `flock`)
    until the block ends, so that `sweep` never takes it from a registration that runs
    and does take it from one killed while it copied."""
    folder = Path(tempfile.mkdtemp(prefix=STAGING, dir=packages_dir))
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield folder
    finally:
        os.close(fd)


def _sweep_staging(packages_dir: Path, entry: str) -> bool:
    """Remove the staging folder `entry` if no registration holds it and it is older than
    `STAGING_GRACE`; whether it did."""
    path = packages_dir / entry
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if time.time() - os.fstat(fd).st_mtime < STAGING_GRACE:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a registration copies into it
        shutil.rmtree(path, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def _legacy_staging_changed(folder: Path) -> float | None:
    """When `folder` (named `LEGACY_STAGING`) or its `pkg` last changed, if it has an
    older version's staging folder's shape: a real folder holding nothing but a real
    folder `pkg` (and the `.lock` an earlier `sweep` made in it, as in any name's
    folder); None if not."""
    try:
        if folder.is_symlink() or not folder.is_dir():
            return None
        if set(os.listdir(folder)) - {"pkg", LOCK}:
            return None
        changed = folder.lstat().st_mtime
        pkg = folder / "pkg"
        if os.path.lexists(pkg):
            if pkg.is_symlink() or not pkg.is_dir():
                return None
            changed = max(changed, pkg.lstat().st_mtime)
    except OSError:
        return None
    return changed


def _unregistered(registered: Callable[[str], bool], name: str) -> bool:
    """No agent is registered as `name` (one registered before copies has a folder of a
    staging folder's shape, `<name>/<version>`, and its version may be `pkg`). False
    when the registry cannot say: the folder is kept (fail closed)."""
    try:
        return not registered(name)
    except Exception:
        return False


def sweep(packages_dir: Path, registered: Callable[[str], bool] | None = None) -> list[str]:
    """Retire every copy in `packages_dir` that no `<version>` link names and nobody reads
    (one a step still holds stays), and empty the trash. Safe while engines run and
    registrations happen: each name's folder is swept under its registration lock.

    Staging folders of registrations killed while they copied go too (`staging`); with
    `registered` (whether an agent of a name is registered), so do those of an older
    version (`tmp*`, `LEGACY_STAGING_AGE`). Returns the `<name>/<copy>` (and
    `.staging-...`, `tmp...`) entries removed. Raises OSError if the folder cannot be read
    (a missing folder is nothing to sweep)."""
    removed: list[str] = []
    try:
        names = sorted(os.listdir(packages_dir))
    except FileNotFoundError:
        return removed
    for name in names:
        folder = packages_dir / name
        if name.startswith(STAGING):
            if _sweep_staging(packages_dir, name):
                removed.append(name)
            continue
        if registered is not None and LEGACY_STAGING.match(name):
            changed = _legacy_staging_changed(folder)
            if changed is not None:  # (not locked as a name's folder: its age stays)
                old = time.time() - changed >= LEGACY_STAGING_AGE
                if old and _unregistered(registered, name):
                    shutil.rmtree(folder, ignore_errors=True)
                    if not os.path.lexists(folder):
                        removed.append(name)
                continue
        if name.startswith(".") or folder.is_symlink() or not folder.is_dir():
            continue
        with _locked(folder / LOCK):
            entries = os.listdir(folder)
            linked = {
                os.readlink(folder / e)
                for e in entries
                if not e.startswith(".") and (folder / e).is_symlink()
            }
            for entry in sorted(entries):
                gone = _is_any_copy(entry) and entry not in linked
                if gone and retire(folder / entry, packages_dir / TRASH):
                    removed.append(f"{name}/{entry}")
    _empty_trash(packages_dir / TRASH)
    return removed


def retire(path: Path, trash: Path) -> bool:
    """Move the copy `path` to the trash if no reader holds it (False: one does; it stays,
    for a later registration to retire). A link left by a failed swap is just removed."""
    if path.is_symlink():
        path.unlink(missing_ok=True)
        return True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        trash.mkdir(exist_ok=True)
        os.rename(path, trash / os.urandom(8).hex())  # under the lock: `reading` sees it
    finally:
        os.close(fd)
    return True


@contextlib.contextmanager
def reading(copy: str) -> Iterator[bool]:
    """Hold the copy folder `copy` (a real path, no symlink in it) against `retire` while
    its files are read. Yields False when it was retired before the lock was taken
    (missing, or no longer at `copy`): the caller resolves the link again."""
    try:
        fd = os.open(copy, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # `retire` holds it only for one rename
        try:
            here = os.stat(copy, follow_symlinks=False)
        except FileNotFoundError:
            here = None
        yield here is not None and os.path.samestat(here, os.fstat(fd))
    finally:
        os.close(fd)


class HeldCopy:
    """A copy a run holds open with a shared `flock` until `release`: `retire` (so a
    registration's swap, and `sweep`) leaves it where it is. `folder`: its name's folder
    (`<packages_dir>/<name>`, a real path)."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder = folder
        self.fd: int | None = fd

    def where(self) -> str | None:
        """The copy's path now: its entry in `folder` (a copy is never moved out of it
        while held; a folder of the layout before copies is renamed within it when a
        registration swaps it for a link). None once released, or if it is gone."""
        if self.fd is None:
            return None
        held = os.fstat(self.fd)
        try:
            entries = os.listdir(self.folder)
        except OSError:
            return None
        for entry in entries:
            path = self.folder / entry
            try:
                if os.path.samestat(os.lstat(path), held):
                    return str(path)
            except OSError:
                continue
        return None

    def release(self) -> None:
        """Let the copy go (a later registration of its name, or `sweep`, retires it
        when no link names it and nobody else holds it). Safe to call again."""
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


def hold(copy: str) -> HeldCopy | None:
    """Hold the copy folder `copy` (a real path in its name's folder, no symlink in it)
    until `HeldCopy.release`; None when it is not there, or was retired before the lock
    was taken."""
    try:
        fd = os.open(copy, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link: not a copy
            return None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # `retire` holds it only for one rename
        here = os.stat(copy, follow_symlinks=False)
        if os.path.samestat(here, os.fstat(fd)):
            return HeldCopy(Path(copy).parent, fd)
    except FileNotFoundError:
        pass
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


RENAME_EXCHANGE = 2
AT_FDCWD = -100


def _exchange(new_link: Path, old: Path) -> None:
    """Swap `new_link` and the folder `old` in one step (`renameat2(RENAME_EXCHANGE)`);
    the folder is then retired under the link's temporary name. Where the kernel or file
    system cannot exchange, the folder is moved aside and the link renamed in: for that
    one moment, once per package of the old layout, the package is missing."""
    import ctypes  # (only here: not at every start of the registry)

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    done = -1
    if renameat2 is not None:
        done = renameat2(
            AT_FDCWD, os.fsencode(new_link), AT_FDCWD, os.fsencode(old), RENAME_EXCHANGE
        )
    if done == 0:
        return
    code = ctypes.get_errno() if renameat2 is not None else errno.ENOSYS
    if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        raise OSError(code, os.strerror(code), str(old))
    aside = old.parent / copy_name(old.name)
    os.rename(old, aside)
    os.replace(new_link, old)


def _empty_trash(trash: Path) -> None:
    """Delete what the trash holds: every copy there was moved while nobody read it."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir(trash):
            shutil.rmtree(trash / entry, ignore_errors=True)
