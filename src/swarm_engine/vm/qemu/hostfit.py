"""Whether a VM's spec can fit this host at all, asked before anything boots.

A guest asking more memory than the host has, or more vCPUs than the engine may run on,
never works: QEMU's guest RAM is refused ("Cannot allocate memory") or a mapped clone
fails later, and 64 vCPUs under TCG on 2 cores boot a template for ~40 s first. So such a
spec is refused up front in one line, before a VM folder, a template or a QEMU exists.

There is no headroom below the host's memory: guest RAM is mapped, not reserved, so a
guest costs what it touches, and one sized near the host's memory boots and runs steps
that use little. Whether several VMs fit together is `max_vms`' and `warm`'s business.
"""

from __future__ import annotations

import os

from swarm_engine.vm.base import VMSpec

MEMINFO = "/proc/meminfo"


def host_memory_mib(meminfo: str = MEMINFO) -> int | None:
    """The host's physical memory (`MemTotal`) in MiB, or None if it cannot be read."""
    try:
        with open(meminfo, encoding="ascii") as file:
            for line in file:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def host_cpus() -> int:
    """The CPUs this engine may run on (its affinity mask: a container's or `taskset`'s)."""
    return len(os.sched_getaffinity(0))


def fit_problem(spec: VMSpec) -> str | None:
    """Why `spec` can never fit this host, in one line, or None."""
    memory = host_memory_mib()
    if memory is not None and spec.memory_mb > memory:
        return f"memory_mb {spec.memory_mb} is more than this host's {memory:,} MiB of memory"
    cpus = host_cpus()
    if spec.vcpus > cpus:
        said = "1 CPU" if cpus == 1 else f"{cpus} CPUs"
        return f"vcpus {spec.vcpus} is more than the {said} this host gives the engine"
    return None
