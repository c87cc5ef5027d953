"""Whether this host gives the engine a memory cgroup (`vm/memcap.py`): tests of the
memory cap skip, with the reason, only where it cannot be had."""

from __future__ import annotations

from swarm_engine.errors import VMError
from swarm_engine.vm.memcap import Groups


def no_memory_cgroup() -> str | None:
    """Why no VM memory cgroup can be made here, or None."""
    try:
        Groups.make().close()
    except VMError as exc:
        return str(exc)
    return None
