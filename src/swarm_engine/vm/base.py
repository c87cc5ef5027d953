"""The VM layer's contract: a backend boots VMs; a VM runs commands and moves files.

A *VM* here is any isolated place one step runs in: a process sandbox (the embedded
default) or a QEMU microVM. Every VM has a workspace folder that commands start in and
that every file path is relative to; no path may leave it.

Backends are chosen by name from `swarm_engine.vm.backends.BACKENDS`.
"""

from __future__ import annotations

import posixpath
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from swarm_engine.errors import VMError
from swarm_engine.records import shown
from swarm_engine.vm.output import DEFAULT_KEEP, BoundedOutput

Stream = Literal["stdout", "stderr"]
OutputCallback = Callable[[Stream, bytes], Awaitable[None] | None]

GUEST_WORKSPACE = "/workspace"
MAX_FILE_BYTES = 64 * 1024 * 1024
"""The largest file the host reads back from a VM (`get_file`), on every backend."""


@dataclass(frozen=True)
class VMSpec:
    """What a step asks of its VM. Limits come from the agent definition."""

    memory_mb: int = 512
    vcpus: int = 1
    timeout_seconds: float = 600.0
    network: bool = False
    allowed_ports: tuple[int, ...] = ()
    image: str | None = None
    max_open_files: int = 1024
    max_processes: int = 256
    labels: Mapping[str, str] = field(default_factory=dict)
    output_keep_bytes: int = DEFAULT_KEEP
    """Of each output stream of each command, this many bytes of its head and as many of
    its tail are kept; the middle is cut (see `vm.output`)."""
    mounts: tuple[tuple[str, str], ...] = ()
    """Read-only host folders shown inside the VM, as (host path, guest path): tools the
    engine installed (Claude Code). The process sandbox binds them read-only; qemu packs
    each into a squashfs image on a read-only drive that the guest mounts (a VM that
    cannot get them does not boot); without isolation the host path itself is visible,
    so an agent looks for what it needs before it uses it."""


TIMEOUT_EXIT = 124
"""A command's exit code when its time limit killed it (as `timeout(1)` reports)."""
OVER_DISK_EXIT = 137
"""A process sandbox command's exit code when its workspace was over its disk limits as
it ended (the code of one killed for them while it ran: 128 + SIGKILL)."""


def shell_exit_code(returncode: int | None, timed_out: bool) -> int:
    """A host process's return code as a shell reports it: 128+N when signal N ended it
    (unknown: killed, 137), `TIMEOUT_EXIT` when its time limit did."""
    if timed_out:
        return TIMEOUT_EXIT
    code = returncode if returncode is not None else -9
    return 128 - code if code < 0 else code


@dataclass(frozen=True)
class ExecResult:
    """A finished command. `stdout`/`stderr` are bounded (`VMSpec.output_keep_bytes`): when a
    stream was longer they hold its head, a `[... N bytes cut ...]` line and its tail.
    `stdout_bytes`/`stderr_bytes` are the true byte counts (default: the captured length)."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    duration_ms: int
    timed_out: bool = False
    stdout_bytes: int = -1
    stderr_bytes: int = -1

    @classmethod
    def of(
        cls, code: int, out: BoundedOutput, err: BoundedOutput, started: float, *, timed_out: bool
    ) -> ExecResult:
        """The result of a command that began at `started` (monotonic seconds) and ended
        now with exit `code`, from its bounded output streams."""
        return cls(
            exit_code=code,
            stdout=out.value(),
            stderr=err.value(),
            duration_ms=int((time.monotonic() - started) * 1000),
            timed_out=timed_out,
            stdout_bytes=out.total,
            stderr_bytes=err.total,
        )

    def __post_init__(self) -> None:
        if self.stdout_bytes < 0:
            object.__setattr__(self, "stdout_bytes", len(self.stdout))
        if self.stderr_bytes < 0:
            object.__setattr__(self, "stderr_bytes", len(self.stderr))

    @property
    def stdout_cut(self) -> bool:
        """True when `stdout` is not the whole stream (its middle was cut)."""
        return self.stdout_bytes > len(self.stdout)

    @property
    def stderr_cut(self) -> bool:
        """True when `stderr` is not the whole stream (its middle was cut)."""
        return self.stderr_bytes > len(self.stderr)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@dataclass(frozen=True)
class VMInfo:
    """What the pool records about a booted VM in the `vms` table."""

    pid: int | None = None
    workspace: str | None = None
    socket_path: str | None = None
    overlay_path: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    isolation: str | None = None
    """What isolates it, as recorded in `vms.isolation`: `bwrap` (process sandbox in its own
    namespaces), `none` (process backend, `isolation = "none"`), `microvm` (qemu)."""


@runtime_checkable
class VM(Protocol):
    """One booted VM. Used by exactly one step, then destroyed."""

    id: str

    def info(self) -> VMInfo: ...

    async def exec(
        self,
        command: Sequence[str] | str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        stdin: bytes | None = None,
        on_output: OutputCallback | None = None,
    ) -> ExecResult:
        """Run `command` (argv, or a string for `sh -c`) in the workspace.

        Output is streamed to `on_output` as it arrives (every byte) and returned bounded
        (`VMSpec.output_keep_bytes` of each stream's head and tail, with the true counts).
        The command is over when its own process exits: background processes it left are
        killed and its pipes are read no further (docs/sandbox.md; the QEMU guest agent
        still waits for every holder of its pipes, up to the timeout).
        On timeout the whole process tree is killed and `timed_out` is set (exit 124+).
        """
        ...

    async def put_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write `data` to `path` (relative to the workspace), creating folders."""
        ...

    async def get_file(self, path: str) -> bytes:
        """Read `path` (relative to the workspace); `VMError` if it is missing."""
        ...

    async def is_alive(self) -> bool: ...

    async def destroy(self) -> None:
        """Kill everything the VM runs and delete its workspace. Idempotent."""
        ...


@dataclass(frozen=True)
class OrphanRecord:
    """A `vms` row whose owner is gone, handed to the backend that made it."""

    id: str
    pid: int | None
    workspace: str | None
    socket_path: str | None
    overlay_path: str | None


class VMBackend(Protocol):
    """Boots VMs of one kind. Config is per backend; see `vm.backends`."""

    name: str

    async def start(self) -> None:
        """Get ready before the first boot (check images, fill warm pools); idempotent."""
        ...

    async def boot(self, vm_id: str, spec: VMSpec) -> VM: ...

    def reap(self, record: OrphanRecord) -> None:
        """Kill and delete what an orphaned VM left behind (its owner process is dead)."""
        ...

    def fence(self, record: OrphanRecord) -> int | None:
        """Kill what a VM of this host runs, though its owner engine may live: its ticket's
        lease ran out (a frozen engine), and the ticket is about to run again. Only
        processes provably that VM's are signalled (as `reap` finds them); its folder is
        left to its owner, which deletes it when it wakes, or to `reap`. Returns how many
        processes were signalled (0: none ran), or None when the record names nothing of
        this backend here. Raises (`VMError`, `OSError`) when they could not be looked
        for: the caller does not run the ticket again then."""
        ...

    async def close(self) -> None:
        """Release backend-wide resources (warm pools, helper processes)."""
        ...


PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_plain_name(name: object) -> bool:
    """True for a VM id that is one file name (no `/`, not `.` or `..`, no NUL): the only
    kind a backend turns into a folder path. A `vms.id` is anything a writer put there."""
    return isinstance(name, str) and PLAIN_NAME.fullmatch(name) is not None and ".." not in name


def safe_relpath(path: str) -> str:
    """Normalise a workspace path; refuse any path that escapes the workspace.

    Accepts relative paths and absolute paths under `/workspace`. Returns a relative,
    normalised POSIX path.
    """
    if "\x00" in path:
        raise VMError(f"invalid path {shown(path)}: contains NUL")
    given = path
    if path.startswith(GUEST_WORKSPACE + "/") or path == GUEST_WORKSPACE:
        path = path[len(GUEST_WORKSPACE) :].lstrip("/") or "."
    if posixpath.isabs(path):
        raise VMError(f"path {shown(given)} is outside the VM workspace")
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../"):
        raise VMError(f"path {shown(given)} is outside the VM workspace")
    return norm


def output_file_path(declared: str) -> str:
    """An agent's declared output file as a workspace path (`safe_relpath`), or `VMError`
    for one that cannot name a file: the workspace itself (`""`, `.`, `./`, `a/..`,
    `/workspace`) or a folder by its form (a trailing `/`, or `.` / `..` last)."""
    path = safe_relpath(declared)
    if path == ".":
        raise VMError(f"path {shown(declared)} names the VM workspace itself, not a file")
    if declared.endswith("/") or declared.rsplit("/", 1)[-1] in (".", ".."):
        raise VMError(f"path {shown(declared)} names a folder, not a file")
    return path
