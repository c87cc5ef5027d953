"""How a process sandbox command's end is told: the exit code it reports and the one
`swarm-engine:` line its stderr ends with when a limit of the sandbox stopped it.

Both paths of `ProcessVM.exec` (a worker thread, `vm/threaded.py`; the event loop,
`vm/streamed.py`) end here, so a limit is told the same way whichever ran the command.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from swarm_engine.vm.base import OVER_DISK_EXIT, shell_exit_code

FILE_SIZE_EXIT = 128 + signal.SIGXFSZ
"""153: the exit code, as a shell reports it, of a process stopped by SIGXFSZ, which the
kernel sends to a write (or truncate) past `RLIMIT_FSIZE` (`prlimit --fsize`, `disk_mb`)."""
OOM_EXIT = 128 + signal.SIGKILL
"""137: what a command during which its VM ran out of memory fails with."""


@dataclass(frozen=True)
class Ended:
    """How a command ended, as the path that ran it saw it."""

    returncode: int | None
    """Its own process's return code (negative: killed by that signal; None: unknown)."""
    timed_out: bool = False
    """Killed at its time limit."""
    killed_over_disk: bool = False
    """Killed while it ran: its workspace was over `disk_mb` or `max_files`."""
    ended_over_disk: bool = False
    """Its workspace was over them when it ended by itself (found by the last count)."""
    no_space: bool = False
    """Its stderr says a write found no room (`said_no_space`)."""
    out_of_memory: bool = False
    """The kernel killed a process of its VM for want of memory while it ran (its VM's
    memory cgroup counted an OOM kill: `vm/memcap.py`)."""


@dataclass(frozen=True)
class DiskLimits:
    """The sandbox's file limits, for the notes that name them."""

    disk_mb: int
    """The largest file (`prlimit --fsize`) and the workspace's total, in MiB."""
    max_files: int
    """Files, folders and links the workspace may hold."""
    uncountable: str | None = None
    """Why the workspace could not be counted, once it could not (its limits fail closed)."""
    tmp_mb: int | None = None
    """The size of the sandbox's /tmp and /dev/shm (None: the host's own, unisolated)."""
    capped: bool = False
    """The workspace is a filesystem of its own, of `disk_mb` (`vm/diskcap.py`)."""
    memory_mb: int | None = None
    """The agent's `memory_mb`, for the line of an OOM kill (None: no memory cgroup)."""


NO_SPACE = (b"No space left on device", b"Disk quota exceeded")
"""What a program says (strerror of ENOSPC, EDQUOT; the sandbox's LANG is C.UTF-8) when a
write found no room."""


def said_no_space(stderr: bytes) -> bool:
    """Whether a command's (kept) stderr says a write found no room."""
    return any(words in stderr for words in NO_SPACE)


def ending(ended: Ended, limits: DiskLimits) -> tuple[int, bytes]:
    """The exit code `ended` reports and the note (b"" for none) its stderr ends with.

    The code is the shell's (`shell_exit_code`: 128 + N for signal N, 124 for a timeout).
    A workspace over its limits comes first: killed for it or found as the command ended,
    it fails with `OVER_DISK_EXIT` (137), with `over_disk_note`, whatever its own code (a
    command that exited by itself just before the kill that was meant for it keeps its
    own, 0 say, otherwise). Else an exit of 153 (`FILE_SIZE_EXIT`, SIGXFSZ) gets
    `file_size_note`: what 153 means under the file size limit. A command may choose 153
    itself; the note says so rather than guess. Else a failed command in a capped
    workspace whose stderr says a write found no room gets `no_space_note` (a
    `fallocate` past `disk_mb` is refused whole: nothing is over to count). Before all
    that, a command during which the kernel killed a process of its VM for want of memory
    fails with `OOM_EXIT` (137) and `out_of_memory_note`, whatever its own code (a shell
    that went on after its child was killed would otherwise hide it)."""
    code = shell_exit_code(ended.returncode, ended.timed_out)
    if ended.out_of_memory and limits.memory_mb is not None:
        if not ended.timed_out:  # a process of it was killed: it fails, whatever its code
            code = OOM_EXIT
        return code, out_of_memory_note(limits)
    if ended.killed_over_disk or ended.ended_over_disk:
        if not ended.timed_out:  # (a timeout's kill that came first keeps its code)
            code = OVER_DISK_EXIT
        return code, over_disk_note(limits, killed=ended.killed_over_disk)
    if code == FILE_SIZE_EXIT:
        return code, file_size_note(limits.disk_mb)
    if code != 0 and not ended.timed_out and ended.no_space and limits.capped:
        return code, no_space_note(limits)
    return code, b""


def out_of_memory_note(limits: DiskLimits) -> bytes:
    """The line for a command during which its VM's memory cgroup killed a process."""
    tmp = (
        f" (+ 2 x tmp_mb = {2 * limits.tmp_mb} MiB for /tmp and /dev/shm)"
        if limits.tmp_mb is not None
        else ""
    )
    return (
        f"\nswarm-engine: the step ran out of memory: its processes reached the agent's"
        f" memory_mb = {limits.memory_mb} MiB{tmp}, and the kernel killed one; it fails"
        f" with exit code {OOM_EXIT} (raise memory_mb, or use less)\n"
    ).encode()


def over_disk_note(limits: DiskLimits, *, killed: bool) -> bytes:
    """The line for a workspace over `disk_mb` or `max_files` (or that could not be
    counted): `killed` while the command ran, or found over them as it ended."""
    what = (
        "the command was killed"
        if killed
        else f"found as the command ended; it fails with exit code {OVER_DISK_EXIT}"
    )
    if limits.uncountable is not None:
        return (
            f"\nswarm-engine: the workspace's disk limits cannot be checked: a folder in"
            f" it cannot be listed ({limits.uncountable}); {what}\n".encode()
        )
    return (
        f"\nswarm-engine: the workspace went over its disk limit of "
        f"{limits.disk_mb} MiB or {limits.max_files} files; {what}\n".encode()
    )


def no_space_note(limits: DiskLimits) -> bytes:
    """The line for a failed command whose stderr says a write found no room, in a
    capped workspace: which limits give that error (the workspace's, and /tmp's)."""
    tmp = (
        f"; /tmp and /dev/shm {limits.tmp_mb} MiB each (tmp_mb)"
        if limits.tmp_mb is not None
        else ""
    )
    return (
        f"\nswarm-engine: a write found no space left: the workspace holds at most "
        f"{limits.disk_mb} MiB (disk_mb) and {limits.max_files} files (max_files){tmp}\n"
    ).encode()


def file_size_note(disk_mb: int) -> bytes:
    """The line for an exit of `FILE_SIZE_EXIT` (153) under a file size limit of
    `disk_mb` MiB: SIGXFSZ, unless the command chose 153 itself (nothing tells which)."""
    return (
        f"\nswarm-engine: exit code {FILE_SIZE_EXIT} means a file reached the size limit of"
        f" {disk_mb} MiB per file (disk_mb) and the write past it was stopped (SIGXFSZ),"
        f" unless the command chose that exit code itself\n".encode()
    )
