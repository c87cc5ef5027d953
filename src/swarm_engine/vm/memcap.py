"""The hard cap on a process VM's memory: a memory cgroup of its own.

With `memory_cap = "cgroup"` (the default) each VM gets a memory cgroup, and the kernel
holds everything its commands make it hold (anonymous memory, shmem and memfd, /tmp and
/dev/shm, the page cache they dirty, the kernel memory the hierarchy charges: pipe
buffers, page tables...) to `memory_mb` plus its two tmpfs of `tmp_mb` each (they were
never part of `memory_mb`: a command that fills /tmp keeps all of `memory_mb`; unisolated,
`memory_mb` alone), with no swap past it. Past it the kernel reclaims, then kills a process of the VM (cgroup v2: all
of them, `memory.oom.group`); the command fails with a line naming `memory_mb`
(`vm/ending.py`). The `prlimit --as` of `memory_mb` + 256 MiB stays on each process.

Where: a folder the engine makes below its own memory cgroup (`swarm-vms-<pid namespace>-
<pid>-<start time>-<random>`, one per backend), and in it one per VM, named by its id.
Each command joins its VM's before anything of it runs: the first program started is
`/bin/sh -c 'echo 0 > "$0" && exec "$@"'`, which writes itself into the cgroup (v1:
its `tasks`, a move without the global lock; v2: its `cgroup.procs`) and then becomes
bubblewrap (or the subreaper); everything the command starts inherits it (one more exec
per command, no extra fork). A command that cannot join
is not run. At a VM's destroy what is left in its cgroup is killed and the cgroup removed;
the folders of engines that are gone are reaped at a backend's start and by `cleanup`
(those below the cgroup of the process that runs it).

cgroup v1 (the memory controller mounted on its own): `memory.limit_in_bytes` and
`memory.memsw.limit_in_bytes` (the same: no swap past it; without swap accounting,
`memory.swappiness` 0), and `memory.kmem.tcp.limit_in_bytes` (the same again: v1 counts
TCP buffers apart, and only once that is set; past it sends wait: a VM's loopback
connections held 365 MiB under a 32 MiB cap before). Pipe and unix socket buffers are
charged to the cgroup itself.
cgroup v2: `memory.max`, `memory.swap.max` 0, `memory.oom.group` 1, `cgroup.kill` at the
end; the engine's cgroup must have the memory controller (delegated to its user when not
root) and, by the "no internal processes" rule, no process beside its child cgroups: an
engine alone in its cgroup moves itself into a leaf (`swarm-engine`) first. Tested on v1
only (the machine it was built on had no v2 memory controller).

Where no writable memory cgroup can be had, `Groups.make` raises `MemCapError` (one
line) and the backend refuses every step (fail closed), unless the host sets
`memory_cap = "rlimit"` (only the address-space limit, which memfd, tmpfs, pipes and
many processes each under it pass).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from swarm_engine.errors import VMError

MIB = 1 << 20
PARENT = re.compile(r"swarm-vms-(\d+)-(\d+)-(\d+)-[0-9a-f]+")
"""A backend's folder: `swarm-vms-<pid namespace inode>-<pid>-<start time>-<random>`."""
LEAF = "swarm-engine"
"""cgroup v2: the leaf an engine alone in its cgroup moves itself into."""
JOIN_FAILED = 125
JOIN = (
    '{ echo 0 > "$0"; } 2>/dev/null || { echo "swarm-engine: the command was not run: it'
    ' cannot join its VM\'s memory cgroup (memory_cap = cgroup)" >&2; exit 125; }; exec "$@"'
)
"""The shell that joins a command to its VM's cgroup (`$0`: `VMGroup.join_file`), or
exits `JOIN_FAILED` (its line on stderr) without running it."""
REMOVE_SECONDS = 5.0
"""How long a cgroup's removal waits for what is killed in it to be gone."""
FIX = (
    'or set [backend_options.process] memory_cap = "rlimit" to cap only each process\'s'
    " address space (memfd, tmpfs, pipes and many processes then hold more than memory_mb)"
)
ROOT_FIX = (
    "give the engine a writable memory cgroup (cgroup v1's memory controller mounted"
    " read-write, or cgroup v2 with the memory controller in the engine's cgroup)"
)
USER_FIX = "run the engine as root, or in a cgroup v2 with the memory controller delegated to it"


class MemCapError(VMError):
    """A VM's memory cannot be capped by a cgroup on this host (one line: why)."""


def how_to_fix() -> str:
    """What to do when no memory cgroup can be had (root is the fix only for a user)."""
    return f"{ROOT_FIX if os.geteuid() == 0 else USER_FIX}, {FIX}"


@dataclass(frozen=True)
class Hierarchy:
    version: int
    """1: the memory controller's own hierarchy; 2: the unified one."""
    base: Path
    """The engine's own memory cgroup: where its backends' folders are made."""


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def find_hierarchy(mountinfo: str | None = None, cgroups: str | None = None) -> Hierarchy:
    """This process's memory cgroup and its hierarchy (from `/proc/self/mountinfo` and
    `/proc/self/cgroup`, or the texts given): cgroup v1's memory controller where it is
    mounted and this process is in it, else v2's. Raises `MemCapError`."""
    v1: tuple[str, str] | None = None
    v2: tuple[str, str] | None = None
    try:
        if mountinfo is None:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        if cgroups is None:
            cgroups = Path("/proc/self/cgroup").read_text()
    except OSError as exc:
        raise MemCapError(f"cannot read this process's cgroups: {exc.strerror}") from exc
    mounts, own = mountinfo.splitlines(), cgroups.splitlines()
    for line in mounts:
        head, _, tail = line.partition(" - ")
        fields, after = head.split(), tail.split()
        if len(fields) < 5 or len(after) < 3:
            continue
        root, point = _unescape(fields[3]), _unescape(fields[4])
        if after[0] == "cgroup" and "memory" in after[2].split(",") and v1 is None:
            v1 = (root, point)
        elif after[0] == "cgroup2" and v2 is None:
            v2 = (root, point)
    paths: dict[str, str] = {}
    for line in own:
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and not controllers:
            paths["v2"] = path
        elif "memory" in controllers.split(","):
            paths["v1"] = path
    if v1 is not None and "v1" in paths:
        return Hierarchy(1, _below(v1, paths["v1"]))
    if v2 is not None and "v2" in paths:
        base = _below(v2, paths["v2"])
        if base.name == LEAF:  # this engine's own leaf (moved there by another backend)
            base = base.parent
        if "memory" not in _read(base / "cgroup.controllers").split():
            raise MemCapError(
                f"cgroup v2 has no memory controller for the engine's cgroup {base}"
                " (it must be enabled in its parent's cgroup.subtree_control, delegated)"
            )
        return Hierarchy(2, base)
    raise MemCapError("this host has no memory cgroup (neither v1's memory controller nor v2)")


def _below(mount: tuple[str, str], path: str) -> Path:
    root, point = mount
    if root != "/" and not (path == root or path.startswith(root.rstrip("/") + "/")):
        raise MemCapError(f"the engine's cgroup {path} is not below its mount's root {root}")
    rel = path[len(root) :] if root != "/" else path
    return Path(point) / rel.lstrip("/")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rpartition(")")[2].split()[19])
    except (IndexError, ValueError):
        return None


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _host_swaps() -> bool:
    """Whether the host has swap (`SwapTotal` in /proc/meminfo; unknown: it may)."""
    for line in _read(Path("/proc/meminfo")).splitlines():
        if line.startswith("SwapTotal:"):
            return line.split()[1:2] != ["0"]
    return True


def _events(path: Path, name: str) -> int:
    """The counter `name` in a flat keyed file (`memory.events`, `memory.oom_control`)."""
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            with contextlib.suppress(ValueError):
                return int(value)
    return 0


class VMGroup:
    """One VM's memory cgroup."""

    def __init__(self, path: Path, version: int, limit_mb: int) -> None:
        self.path = path
        self.version = version
        self.limit_mb = limit_mb
        """What it holds at most, in MiB (`memory_mb` + its tmpfs)."""

    @property
    def join_file(self) -> str:
        """The file each command's first program writes itself (`0`) into: v1's `tasks`,
        which moves the writing thread alone and so skips the global lock that makes a
        move through `cgroup.procs` wait for an RCU grace period (15 ms against 0.6 ms
        here; the program is single-threaded: the thread is the process); v2's
        `cgroup.procs` (its `cgroup.threads` is for threaded cgroups only)."""
        return str(self.path / ("cgroup.procs" if self.version == 2 else "tasks"))

    def join_argv(self) -> list[str]:
        """The argv prefix that makes a command join this cgroup before it runs."""
        return ["/bin/sh", "-c", JOIN, self.join_file]

    def oom_kills(self) -> int:
        """How many processes the kernel killed in it for want of memory so far."""
        if self.version == 2:
            return _events(self.path / "memory.events", "oom_kill")
        return _events(self.path / "memory.oom_control", "oom_kill")

    def remove(self) -> str | None:
        """Kill what is left in it and remove it. Returns None once it is gone, else one
        line saying why not. Never raises."""
        try:
            _remove(self.path, self.version)
        except OSError as exc:
            return f"could not remove memory cgroup {self.path}: {exc.strerror or exc}"
        return None


class Groups:
    """The memory cgroups of one backend's VMs: a folder below the engine's cgroup."""

    def __init__(self, hierarchy: Hierarchy, parent: Path) -> None:
        self.hierarchy = hierarchy
        self.parent = parent

    @classmethod
    def make(cls) -> Groups:
        """This backend's folder, made (and checked by making a VM's cgroup in it with a
        limit, once). Raises `MemCapError` (one line) where it cannot be had; `VMError`
        for a shortage of the host now (tried again)."""
        hierarchy = find_hierarchy()
        base = hierarchy.base
        pid = os.getpid()
        name = f"swarm-vms-{_pid_namespace()}-{pid}-{_start_time(pid) or 0}-{secrets.token_hex(4)}"
        parent = base / name
        try:
            if hierarchy.version == 2:
                _delegate(base)
            os.mkdir(parent)
        except OSError as exc:
            if exc.errno in (errno.ENOMEM, errno.EAGAIN):
                raise VMError(f"cannot make a memory cgroup now: {exc.strerror}") from exc
            raise MemCapError(f"cannot make a memory cgroup in {base}: {exc.strerror}") from exc
        groups = cls(hierarchy, parent)
        try:
            if hierarchy.version == 2:
                _write(parent / "cgroup.subtree_control", "+memory")
            groups.create("probe", 16).remove()
        except BaseException as exc:
            groups.close()
            if isinstance(exc, OSError):
                raise MemCapError(f"cannot cap a memory cgroup in {base}: {exc.strerror}") from exc
            raise
        return groups

    def create(self, vm_id: str, limit_mb: int) -> VMGroup:
        """VM `vm_id`'s cgroup, holding at most `limit_mb` MiB, no swap past it. Raises
        `OSError`, or `MemCapError` where swap cannot be kept out (nothing left made)."""
        path = self.parent / vm_id
        os.mkdir(path)
        group = VMGroup(path, self.hierarchy.version, limit_mb)
        limit = str(limit_mb * MIB)
        try:
            if group.version == 2:
                _write(path / "memory.max", limit)
                try:
                    _write(path / "memory.swap.max", "0")
                except FileNotFoundError:  # no swap accounting: fail closed where it swaps
                    if _host_swaps():
                        raise MemCapError(
                            "this host has swap, and its cgroup v2 has no swap accounting"
                            " (memory.swap.max), so a VM could swap past memory_mb"
                        ) from None
                with contextlib.suppress(FileNotFoundError):  # (Linux 4.19 on)
                    _write(path / "memory.oom.group", "1")
            else:
                _write(path / "memory.limit_in_bytes", limit)
                try:
                    _write(path / "memory.memsw.limit_in_bytes", limit)
                except FileNotFoundError:  # no swap accounting: it may not swap at all
                    _write(path / "memory.swappiness", "0")
                with contextlib.suppress(FileNotFoundError):  # v1 counts TCP buffers only
                    _write(path / "memory.kmem.tcp.limit_in_bytes", limit)  # once limited
        except BaseException:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            raise
        return group

    def close(self) -> str | None:
        """Remove the backend's folder (its VMs' cgroups are gone by now; any left is
        killed and removed too). Never raises: one line when something is left."""
        return remove_parent(self.parent, self.hierarchy.version)


def _delegate(base: Path) -> None:
    """cgroup v2: let `base`'s children have the memory controller. A cgroup with
    processes of its own cannot (no internal processes): an engine alone in it moves
    itself into the leaf `LEAF` first; one with other processes is refused."""
    if "memory" in _read(base / "cgroup.subtree_control").split():
        return
    try:
        _write(base / "cgroup.subtree_control", "+memory")
        return
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
    others = [p for p in _read(base / "cgroup.procs").split() if p != str(os.getpid())]
    if others:
        raise MemCapError(
            f"the engine's cgroup {base} holds other processes ({len(others)}), so cgroup v2"
            " gives its children no memory controller: start the engine in a cgroup of its"
            " own (systemd-run --scope -p Delegate=yes)"
        )
    leaf = base / LEAF
    with contextlib.suppress(FileExistsError):
        os.mkdir(leaf)
    _write(leaf / "cgroup.procs", "0")
    _write(base / "cgroup.subtree_control", "+memory")


def _kill_all(path: Path, version: int) -> None:
    if version == 2:
        try:
            _write(path / "cgroup.kill", "1")
            return
        except FileNotFoundError:  # before Linux 5.14: one by one
            pass
    suffix = f"/{path.parent.name}/{path.name}"
    for line in _read(path / "cgroup.procs").split():
        with contextlib.suppress(ValueError, OSError):
            pid = int(line)
            pidfd = os.pidfd_open(pid)
            try:  # still in this cgroup once held by its pidfd: not a reused pid
                own = _read(Path(f"/proc/{pid}/cgroup")).splitlines()
                if any(entry.endswith(suffix) for entry in own):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            finally:
                os.close(pidfd)


def _remove(path: Path, version: int) -> None:
    """Kill what is in cgroup `path` and remove it, waiting up to `REMOVE_SECONDS` for the
    killed to be gone. Raises `OSError` (EBUSY: still there then)."""
    deadline = time.monotonic() + REMOVE_SECONDS
    pause = 0.0005
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
        _kill_all(path, version)  # (usually: a command's last process still exiting)
        time.sleep(pause)  # the killed exit: a condition polled, with a deadline
        pause = min(pause * 2, 0.05)


def remove_parent(parent: Path, version: int) -> str | None:
    """Remove a backend's folder and every VM cgroup in it (what runs there killed)."""
    try:
        for child in parent.iterdir():
            if child.is_dir():
                _remove(child, version)
        _remove(parent, version)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"could not remove memory cgroups {parent}: {exc.strerror or exc}"
    return None


def sweep() -> list[str]:
    """Remove the folders (and VM cgroups) of backends whose engine is gone, below this
    process's memory cgroup: its pid no longer runs, or runs another process (its start
    time differs). Those of another pid namespace are not judged. Returns the names
    removed; one that cannot be is left for the next sweep. Never raises."""
    try:
        hierarchy = find_hierarchy()
        names = sorted(child.name for child in hierarchy.base.iterdir())
    except (MemCapError, OSError):
        return []
    here = _pid_namespace()
    removed: list[str] = []
    for name in names:
        found = PARENT.fullmatch(name)
        if found is None:
            continue
        namespace, pid, started = (int(n) for n in found.groups())
        if namespace != here:
            continue
        now = _start_time(pid)
        if now is not None and started in (0, now):
            continue  # its engine runs (or may: its start time was not known)
        if remove_parent(hierarchy.base / name, hierarchy.version) is None:
            removed.append(name)
    return removed
