"""Bubblewrap on this host: whether a sandbox can be built here, and who a sandbox is.

The identity every command of the process backend has (its uid, passwd and group, the
host uid a root engine gives it), the host files of /etc it sees, the probe that says in
one line why bubblewrap cannot run here, and the file descriptors handed to each
bubblewrap (`vm/process_argv.py` builds the command line itself).
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping

from swarm_engine.errors import VMError
from swarm_engine.vm.base import GUEST_WORKSPACE
from swarm_engine.vm.sandbox_env import bwrap_env_args, env_block

ETC_FILES = ("hosts", "nsswitch.conf", "ld.so.cache", "localtime", "alternatives", "ssl")
"""Host files of /etc a sandbox sees (read-only); its passwd and group are its own."""
GUEST_UID = 1000
"""The uid and gid commands have inside the sandbox: not root, no capabilities."""
HOST_UID_BASE = 2_000_000_000
HOST_UID_SPAN = 1 << 24
"""When the engine runs as root, each sandbox runs as its own host uid drawn from
[HOST_UID_BASE, HOST_UID_BASE + HOST_UID_SPAN): no host user, so it owns no host file
and process, and its process limit counts its own processes only."""
PASSWD = (
    "root:x:0:0:root:/:/usr/sbin/nologin\n"
    f"sandbox:x:{GUEST_UID}:{GUEST_UID}:sandbox:{GUEST_WORKSPACE}:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
GROUP = f"root:x:0:\nsandbox:x:{GUEST_UID}:\nnogroup:x:65534:\n"
SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN})
"""Errors that say the engine's host is short of something for now."""
DISK_SHORTAGES = frozenset({errno.ENOSPC, errno.EDQUOT})
"""Errors that say the disk under the engine's home is full for now: waited out where the
engine makes what a step needs (`vm/shortage.py`), not where it writes a log file (the
live copy in the store has it all)."""
MOUNT_POINT = "/mnt"
"""Root engine: where a command's private mount namespace shows its workspace to bubblewrap."""
HOW_TO_FIX = (
    "install bubblewrap (apt-get install bubblewrap) and allow unprivileged user namespaces, "
    'or set [backend_options.process] isolation = "none" to run steps on the host unisolated'
)


def root_engine() -> bool:
    return os.geteuid() == 0


def others_can_reach(folder: str) -> bool:
    """Whether any uid may walk the path down to `folder` (a real path): each folder from
    `/` to it is searchable by others (`o+x`). Then a root engine's sandbox uid reaches its
    workspace there by path, and its commands need no private mount (`ProcessVM._argv`).
    Mode bits only (an ACL that narrows them makes each command fail, with bubblewrap's
    line). Blocking: one `stat` per folder."""
    path = folder
    while True:
        try:
            if not os.stat(path).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def bwrap_problem() -> str | None:
    """Why the sandbox cannot be built here (one line), or None when it can: runs the
    namespaces, uid, capability and tmpfs options every command uses. Raises `VMError`
    when the engine cannot even start the check now (out of descriptors, memory or
    processes): that passes, and says nothing about bubblewrap."""
    exe = shutil.which("bwrap")
    if not exe:
        return "bubblewrap (bwrap) is not installed"
    if root_engine() and not shutil.which("setpriv"):
        return "setpriv (util-linux) is not installed, so sandboxes cannot leave root"
    argv = [exe, "--unshare-all", "--unshare-user", "--uid", str(GUEST_UID), "--gid",
            str(GUEST_UID), "--cap-drop", "ALL", "--die-with-parent", "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64", "--size", "1048576", "--tmpfs", "/tmp",
            "--remount-ro", "/", "true"]  # fmt: skip
    if root_engine():  # as every command of a root engine runs: see ProcessVM._argv
        if not os.path.isdir(MOUNT_POINT):
            return f"{MOUNT_POINT} is missing (the root engine binds workspaces there)"
        bind = [host_tool("unshare"), "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                f'mount --bind -- "$0" {MOUNT_POINT} && exec "$@"', "/usr"]  # fmt: skip
        argv = [*bind, *drop_to(HOST_UID_BASE), *argv]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except OSError as exc:
        if exc.errno in SHORTAGES:  # the host, for now, not bubblewrap: not a verdict
            raise VMError(
                f"cannot check the process sandbox now: {exc.strerror} (the engine is short "
                "of file descriptors, memory or processes: raise ulimit -n, or wait)"
            ) from exc
        return f"bubblewrap does not run: {exc}"
    except subprocess.TimeoutExpired as exc:
        return f"bubblewrap does not run: {exc}"
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        return f"bubblewrap does not work here: {why[-1] if why else f'exit {done.returncode}'}"
    return None


def bwrap_works() -> bool:
    return bwrap_problem() is None


def host_tool(name: str) -> str:
    """A host program, found on the engine's PATH (the sandbox's PATH is its own)."""
    return _which(name, os.environ.get("PATH"))


@functools.lru_cache(maxsize=64)
def _which(name: str, path: str | None) -> str:
    return shutil.which(name, path=path) or name


@functools.lru_cache(maxsize=1)
def etc_files() -> tuple[str, ...]:
    """The host's /etc files a sandbox sees, read-only (looked up once)."""
    return tuple(name for name in ETC_FILES if os.path.exists(f"/etc/{name}"))


def drop_to(uid: int) -> list[str]:
    return [host_tool("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]


def disables_userns() -> bool:
    try:
        done = subprocess.run(
            [host_tool("bwrap"), "--help"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"--disable-userns" in done.stdout


class SandboxFds:
    """File descriptors handed to one command's wrapper: the command's environment (a
    memory file: `--setenv` triples bubblewrap reads with `--args`, or `NAME=value`
    strings the subreaper reads, `vm/sandbox_env.py`); under bubblewrap also the
    sandbox's passwd and group (memory files bubblewrap reads, so no file is made on disk
    for them and the sandbox's uid needs no access to any host path), and, for a command
    with ports, the info and block pipes that let pasta join it first."""

    def __init__(self, env: int, passwd: int | None = None, group: int | None = None) -> None:
        self.env = env
        self.passwd = passwd
        self.group = group
        self.info: int | None = None
        self.info_r: int | None = None
        self.block: int | None = None
        self.block_w: int | None = None
        self._open = [fd for fd in (env, passwd, group) if fd is not None]

    @classmethod
    def open(
        cls, *, network: bool, env: Mapping[str, str] | None = None, sandbox: bool = True
    ) -> SandboxFds:
        """New fds for one command (each wrapper reads its own to the end): `env` (none:
        an empty environment) as bubblewrap's `--args` when `sandbox`, else as the
        subreaper's block. Raises `OSError` when they cannot be had (e.g. out of file
        descriptors or memory, which `vm/shortage.py` waits out), with none of them left
        open; `VMError` (nothing opened) for an environment no process can have."""
        block = bwrap_env_args(env or {}) if sandbox else env_block(env or {})
        opened: list[int] = []
        try:
            opened.append(memory_file("env", block))
            if sandbox:
                for name, text in (("passwd", PASSWD), ("group", GROUP)):
                    opened.append(memory_file(name, text.encode()))
            if network:
                opened += os.pipe()
                opened += os.pipe()
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise
        fds = cls(*opened[:3]) if sandbox else cls(opened[0])
        if network:
            fds.info_r, fds.info, fds.block, fds.block_w = opened[-4:]
            fds._open += opened[-4:]
        return fds

    @property
    def passed(self) -> tuple[int, ...]:
        extra = (self.info, self.block) if self.info is not None and self.block is not None else ()
        users = (
            (self.passwd, self.group) if self.passwd is not None and self.group is not None else ()
        )
        return (self.env, *users, *extra)

    def _close(self, fd: int | None) -> None:
        if fd is not None and fd in self._open:
            self._open.remove(fd)
            os.close(fd)

    def close_passed(self) -> None:
        """The child has its copies: close ours of the ends it uses (so EOF means it died)."""
        for fd in self.passed:
            self._close(fd)

    def close(self) -> None:
        for fd in list(self._open):
            self._close(fd)


def memory_file(name: str, data: bytes) -> int:
    """A close-on-exec memory file holding `data`, read from its start (`memfd_create`)."""
    fd = os.memfd_create(f"swarm-{name}", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
