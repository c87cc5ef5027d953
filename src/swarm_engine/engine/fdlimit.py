"""The open files (RLIMIT_NOFILE) an engine needs for its `max_vms` slots, made sure of
before it starts: the soft limit raised up to the hard limit when it is lower, and a
start refused in one line when the hard limit itself is (fail closed: an engine short of
descriptors would start and then fail, or hold up, every ticket). With the process
sandbox the hard limit must also allow the open files each command is given
(`COMMAND_FILES`), or every step is refused (`vm/hostlimits.py`).

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
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.hostlimits import can_raise_limits

BASE = 48
"""Descriptors an engine needs whatever its slots: what it holds idle, room for a
PostgreSQL store's connections, and for commands starting."""
PER_SLOT = 8
"""Descriptors each busy slot may hold (measured: 4 for a process-sandbox step)."""
COMMAND_FILES = VMSpec().max_open_files
"""The open files the process sandbox gives each command (`prlimit --nofile`)."""
NR_OPEN = "/proc/sys/fs/nr_open"
"""The most a soft limit may be (an unlimited hard limit cannot be the soft one)."""


def needed(max_vms: int) -> int:
    """The open-file limit an engine with `max_vms` slots needs."""
    return BASE + PER_SLOT * max_vms


def hard_needed(max_vms: int, backend: str) -> int:
    """The hard limit it needs: `needed`, and, for the process sandbox, what each of its
    commands is given (`prlimit --nofile`, which a sandbox in a user namespace cannot
    raise past the engine's own hard limit: every step would be refused)."""
    return max(needed(max_vms), COMMAND_FILES if backend == "process" else 0)


def ensure_open_files(max_vms: int, backend: str) -> tuple[int, int] | None:
    """Make this process's open-file limit hold `max_vms` slots of `backend` (the
    engine's default backend): a soft limit below `needed` is raised up to the hard
    limit. A hard limit below `hard_needed` is raised to it by a process that may
    (CAP_SYS_RESOURCE); else `VMError`, one line naming the limit, the need and how to
    raise it: the engine does not start. Returns (old soft, new soft) when it raised
    the soft limit, None when it was enough."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need, hard_need = needed(max_vms), hard_needed(max_vms, backend)
    unlimited = resource.RLIM_INFINITY
    if hard != unlimited and hard < hard_need:
        try:
            if not can_raise_limits():
                raise PermissionError
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard_need))
        except (OSError, ValueError):
            raise VMError(_too_low(max_vms, hard, hard_need)) from None
        return (soft, max(soft, need)) if soft < need else None
    if soft == unlimited or soft >= need:
        return None
    target = _ceiling() if hard == unlimited else hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(target, need), hard))
    return soft, max(target, need)


def _too_low(max_vms: int, hard: int, hard_need: int) -> str:
    how = (
        f"raise it before 'swarm-engine start' (ulimit -Hn {hard_need} as root,"
        f" LimitNOFILE={hard_need} in a systemd unit, nofile in /etc/security/limits.conf)"
    )
    if hard_need > needed(max_vms):  # the sandbox's commands ask more than the slots
        return (
            f"the open-file limit is too low for the process sandbox: each command is given"
            f" {COMMAND_FILES} open files, above this engine's hard limit (ulimit -Hn) of"
            f" {hard}: {how}, or use --backend qemu"
        )
    fits = (hard - BASE) // PER_SLOT
    return (
        f"the open-file limit is too low for --max-vms {max_vms}: an engine needs"
        f" {hard_need} open files ({BASE} + {PER_SLOT} per VM) and its hard limit (ulimit"
        f" -Hn) is {hard}: {how}" + (f", or lower --max-vms to {fits}" if fits >= 1 else "")
    )


def _ceiling() -> int:
    """The highest soft limit the kernel takes (`fs.nr_open`), for an unlimited hard one."""
    try:
        with open(NR_OPEN, encoding="ascii") as nr_open:
            return int(nr_open.read().strip())
    except (OSError, ValueError):
        return 1048576  # the kernel's default
