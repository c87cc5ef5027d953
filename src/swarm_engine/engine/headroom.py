"""Room in the engine's own process for more VMs: its file descriptors (`ulimit -n`).

A VM's command needs a dozen descriptors in the engine while it runs (its pipes, a pidfd,
a wake-up pipe, a selector, the sandbox's passwd and group, the step's log file). An
engine that claims tickets it has no descriptors for fails them all within a second
(`Too many open files` at each spawn), though the shortage may pass. So the daemon claims
only as many tickets as its descriptors leave room for, and says why it waits; tickets
stay open meanwhile, and it claims again as soon as there is room.
"""

from __future__ import annotations

import os
import resource

FDS_PER_VM = 16
"""Descriptors set aside per VM (a command on the process backend uses about 10)."""
FDS_RESERVED = 32
"""Descriptors kept for the engine itself (store connections, logs, the API, watchers)."""


def free_fds() -> int | None:
    """File descriptors this process may still open: its soft `RLIMIT_NOFILE` less those
    open now (counted in /proc/self/fd). None when unlimited or not known."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        return None
    return soft - used


def vms_with_room(wanted: int, free: int | None) -> int:
    """How many of `wanted` more VMs `free` descriptors leave room for (all when unknown)."""
    if free is None:
        return wanted
    return max(0, min(wanted, (free - FDS_RESERVED) // FDS_PER_VM))


def needed(max_vms: int) -> int:
    """Descriptors an engine running `max_vms` VMs at once wants in all."""
    return FDS_RESERVED + max_vms * FDS_PER_VM
