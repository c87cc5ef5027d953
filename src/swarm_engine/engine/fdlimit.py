"""The open files (RLIMIT_NOFILE) an engine needs for its `max_vms` slots, made sure of
before it starts: the soft limit raised up to the hard limit when it is lower, and a
start refused in one line when the hard limit itself is (fail closed: an engine short of
descriptors would start and then fail, or hold up, every ticket).

Measured with the process sandbox on SQLite (`ls /proc/PID/fd` of an engine with N
`sleep` steps running; docs/engine.md, "Open files"): an engine holds 21 descriptors
idle (its databases and their `-wal`/`-shm` files, the store watcher, the event loop,
its log) and 4 more per busy slot (the step's `output.log`, its pidfd and two pipes);
a command's start needs about 8 more for a moment, and several slots start at once. The
smallest soft limit under which N slots all started with no shortage wait: 32 for 1, 48
for 4, 66 for 8, 104 for 16. On PostgreSQL (a throwaway 15 server) it holds 12 idle (6
of them sockets: pooled connections and the listener) and the same 4 per busy slot.
With QEMU microVMs (SQLite, 3 `sleep` steps): 20 idle, 3 per busy slot. `BASE` and
`PER_SLOT` hold room above those, for an agent's connections (a Claude agent's, not
measured) and commands starting at once.
"""

from __future__ import annotations

import resource

from swarm_engine.errors import VMError
from swarm_engine.vm.hostlimits import can_raise_limits

BASE = 48
"""Descriptors an engine needs whatever its slots: what it holds idle, room for a
PostgreSQL store's connections, and for commands starting."""
PER_SLOT = 8
"""Descriptors each busy slot may hold (measured: 4 for a process-sandbox step)."""
NR_OPEN = "/proc/sys/fs/nr_open"
"""The most a soft limit may be (an unlimited hard limit cannot be the soft one)."""


def needed(max_vms: int) -> int:
    """The open-file limit an engine with `max_vms` slots needs."""
    return BASE + PER_SLOT * max_vms


def ensure_open_files(max_vms: int) -> tuple[int, int] | None:
    """Make this process's open-file limit hold `max_vms` slots: a soft limit below
    `needed` is raised up to the hard limit (or, for a process that may raise its hard
    limit, CAP_SYS_RESOURCE, both to the need when the hard one is lower). Returns
    (old soft, new soft) when it raised it, None when it was enough. Raises `VMError`
    (one line naming the limit, the need and how to raise it) when the hard limit is
    below the need and cannot be raised: the engine does not start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = needed(max_vms)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    if hard == resource.RLIM_INFINITY or hard >= need:
        target = _ceiling() if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(target, need), hard))
        return soft, max(target, need)
    if can_raise_limits():
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return soft, need
        except (OSError, ValueError):
            pass  # (refused below)
    fits = (hard - BASE) // PER_SLOT
    raise VMError(
        f"the open-file limit is too low for --max-vms {max_vms}: an engine needs {need}"
        f" open files ({BASE} + {PER_SLOT} per VM) and its hard limit (ulimit -Hn) is"
        f" {hard}: raise it before 'swarm-engine start' (ulimit -Hn {need} as root,"
        f" LimitNOFILE={need} in a systemd unit, nofile in /etc/security/limits.conf)"
        + (f", or lower --max-vms to {fits}" if fits >= 1 else "")
    )


def _ceiling() -> int:
    """The highest soft limit the kernel takes (`fs.nr_open`), for an unlimited hard one."""
    try:
        with open(NR_OPEN, encoding="ascii") as nr_open:
            return int(nr_open.read().strip())
    except (OSError, ValueError):
        return 1048576  # the kernel's default
