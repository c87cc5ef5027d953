"""The engine's own resource limits, as they bound its sandboxes.

Each process-sandbox command runs under `prlimit` with the limits of its `VMSpec` (open
files, processes). A process can raise its hard limits only with CAP_SYS_RESOURCE: inside
a user namespace (bubblewrap) it never can, and root in a container often lacks it. Then a
limit above the engine's own hard limit would make `prlimit` fail in every command, so
the sandbox refuses the step up front with one line naming the fix (`hard_limit_problem`).
"""

from __future__ import annotations

import resource

from swarm_engine.vm.base import VMSpec

CAP_SYS_RESOURCE = 24


def can_raise_limits() -> bool:
    """Whether this engine may raise a hard resource limit (CAP_SYS_RESOURCE in its
    effective set: root in a container often lacks it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    except (OSError, ValueError):
        pass
    return False


def hard_limit_problem(spec: VMSpec) -> str | None:
    """What a command's limits ask above this engine's own hard limits, which the sandbox
    cannot raise (`prlimit` would fail in every command), or None."""
    asks = (
        (resource.RLIMIT_NOFILE, spec.max_open_files, "open files", "ulimit -Hn"),
        (resource.RLIMIT_NPROC, spec.max_processes, "processes", "ulimit -Hu"),
    )
    for which, wanted, what, how in asks:
        hard = resource.getrlimit(which)[1]
        if hard != resource.RLIM_INFINITY and hard < wanted:
            return (
                f"each command may have {wanted} {what}, above this engine's hard limit of "
                f"{hard} ({how}): start the engine with {how} {wanted} or more"
            )
    return None
