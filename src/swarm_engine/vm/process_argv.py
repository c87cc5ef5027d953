"""A process VM's command line (`CommandLine`, which `ProcessVM` is made of): each
command's own environment, its resource limits (`prlimit`), and the programs that start it:
its memory cgroup joined first (`vm/memcap.py`), then bubblewrap with the sandbox's mounts
or, with `isolation = "none"`, a child subreaper (`vm/subreaper.py`); for a root engine, a
private mount namespace and a drop to the VM's uid first.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from swarm_engine.errors import VMError
from swarm_engine.vm.base import GUEST_WORKSPACE, VMSpec, safe_relpath
from swarm_engine.vm.bwrap import GUEST_UID, MOUNT_POINT, SandboxFds, drop_to, etc_files, host_tool
from swarm_engine.vm.memcap import VMGroup
from swarm_engine.vm.process_config import ProcessConfig
from swarm_engine.vm.proctree import VM_TAG
from swarm_engine.vm.sandbox_env import SANDBOX_PATH, prlimit

PROC_MASKS = (
    "--tmpfs", "/proc/fs", "--remount-ro", "/proc/fs",
    "--ro-bind", "/dev/null", "/proc/diskstats", "--ro-bind", "/dev/null", "/proc/partitions",
)  # fmt: skip
"""What the sandbox's /proc hides of the host's block devices, which a PID namespace does
not: every filesystem's free blocks (`/proc/fs/ext4/*/mb_groups`) and every disk's I/O
counts and size, through which a step could watch other VMs' workspaces fill."""
SUBREAPER = Path(__file__).with_name("subreaper.py")
BASE_PATH = SANDBOX_PATH
CPU_SECONDS_MAX = 7 * 24 * 3600
"""The most CPU time a command is given (`prlimit --cpu`): the longest a step may run
(`models.STEP_TIMEOUT_MAX`). A longer or non-finite timeout (a caller's, or a row's that
slipped past decoding) is clamped to it: past about 1.8e19 `prlimit` cannot parse the limit
and fails every command as if it had exited 1."""


def cpu_seconds(timeout: float) -> int:
    """The CPU limit for a command with this wall-clock timeout: 2 s over it, clamped to
    `CPU_SECONDS_MAX` (NaN and infinity too)."""
    if not timeout < CPU_SECONDS_MAX:  # also NaN, inf
        return CPU_SECONDS_MAX + 2
    return max(int(timeout), 0) + 2


class CommandLine:
    """How a process VM starts a command: what `ProcessVM` (vm/process_vm.py) sets in its
    `__init__` is all this reads."""

    id: str
    workspace: Path
    spec: VMSpec
    isolated: bool
    host_uid: int | None
    config: ProcessConfig
    memory: VMGroup | None
    _real_workspace: str | None
    _reachable: bool
    _no_userns: bool

    @property
    def guest_workspace(self) -> str:
        return GUEST_WORKSPACE if self.isolated else str(self.workspace)

    def _guest_env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        """The command's own environment: the engine's defaults, then the step's `extra`
        (an agent's `env:`, `INPUT_*`...), then the VM's tag. Handed to the command alone
        (`SandboxFds`), never to a host program (`sandbox_env.host_env`)."""
        env = {
            "PATH": BASE_PATH,
            "HOME": self.guest_workspace,
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
            "SWARM_WORKSPACE": self.guest_workspace,
            VM_TAG: self.id,
        }
        env.update(extra or {})
        env[VM_TAG] = self.id
        return env

    def _limits(self, timeout: float) -> list[str]:
        return [
            prlimit(),
            f"--as={self.spec.memory_mb * 1024 * 1024 + 256 * 1024 * 1024}",
            f"--cpu={cpu_seconds(timeout)}",
            f"--nofile={self.spec.max_open_files}",
            f"--nproc={self.spec.max_processes}",
            f"--fsize={self.config.disk_mb * 1024 * 1024}",
            "--",
        ]

    def _argv(
        self, command: Sequence[str] | str, cwd: str | None, timeout: float, fds: SandboxFds
    ) -> list[str]:
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        if not argv:
            raise VMError("empty command")
        rel = safe_relpath(cwd) if cwd else "."
        # its memory cgroup is joined by the first program, before anything else runs
        join = self.memory.join_argv() if self.memory is not None else []
        return [*join, *self._wrapped(argv, rel, timeout, fds)]

    def _wrapped(self, argv: list[str], rel: str, timeout: float, fds: SandboxFds) -> list[str]:
        limits = self._limits(timeout)
        if not self.isolated:
            # no PID namespace: a child subreaper keeps every descendant findable, and
            # kills the leftovers when the command's own process exits (vm/subreaper.py);
            # it gives the command its environment (fds.env), having a fixed one itself
            reaper = [sys.executable, "-I", "-S", str(SUBREAPER), str(os.getpid()),
                      str(fds.env), "--"]  # fmt: skip
            return [*reaper, *limits, *argv]
        assert fds.passwd is not None and fds.group is not None
        tmp = str(self.config.tmp_mb * 1024 * 1024)
        wrap = [
            host_tool("bwrap"), "--unshare-all", "--unshare-user", "--uid", str(GUEST_UID),
            "--gid", str(GUEST_UID), "--cap-drop", "ALL", "--die-with-parent", "--new-session",
            "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--proc", "/proc", *PROC_MASKS, "--dev", "/dev",
            "--size", tmp, "--tmpfs", "/dev/shm", "--size", tmp, "--tmpfs", "/tmp",
            "--bind", MOUNT_POINT if self._private_mount else self._bind_source,
            GUEST_WORKSPACE,
            "--ro-bind-data", str(fds.passwd), "/etc/passwd",
            "--ro-bind-data", str(fds.group), "/etc/group",
        ]  # fmt: skip
        for name in etc_files():
            wrap += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        for host, guest in self.spec.mounts:  # tools the engine installed, read-only
            wrap += ["--ro-bind", host, guest]
        wrap += ["--remount-ro", "/dev", "--remount-ro", "/"]
        if self._no_userns:
            wrap += ["--disable-userns"]
        if fds.info is not None and fds.block is not None:
            wrap += ["--info-fd", str(fds.info), "--block-fd", str(fds.block)]
        # the command's environment, read from a memory file (no host program has it,
        # no command line shows it): bubblewrap sets it for the program it starts
        wrap += ["--clearenv", "--args", str(fds.env)]
        chdir = GUEST_WORKSPACE if rel == "." else f"{GUEST_WORKSPACE}/{rel}"
        wrap += ["--chdir", chdir, "--"]
        if self.host_uid is None:
            return [*wrap, *limits, *argv]
        if not self._private_mount:  # root engine, reachable folder: bubblewrap as the uid
            return [*drop_to(self.host_uid), *wrap, *limits, *argv]
        # Root engine: bubblewrap runs as the sandbox's own uid, which may not be able to
        # reach the workspace's path (a 0700 home); so the workspace is first bound onto
        # MOUNT_POINT in a private mount namespace that only this command sees (four more
        # programs started per command: ~4 ms of CPU, docs/benchmarks.md).
        bind = [host_tool("unshare"), "--mount", "--propagation", "private", "--",
                "/bin/sh", "-c", f'mount --bind -- "$0" {MOUNT_POINT} && exec "$@"',
                str(self.workspace)]  # fmt: skip
        return [*bind, *drop_to(self.host_uid), *wrap, *limits, *argv]

    @property
    def _bind_source(self) -> str:
        """The workspace's path as bubblewrap binds it: its real path when known (the
        folders `others_can_reach` checked, none of them a symlink to walk)."""
        return self._real_workspace or str(self.workspace)

    @property
    def _private_mount(self) -> bool:
        """Whether a command first binds the workspace onto MOUNT_POINT in a mount
        namespace of its own (a root engine whose VM folders others cannot reach)."""
        return self.host_uid is not None and not self._reachable
