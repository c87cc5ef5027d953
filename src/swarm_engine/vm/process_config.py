"""The process backend's options, apart from the backend itself: settings validate them
when they load (vm/options.py), and loading settings should not import the sandbox code
(asyncio, subprocess handling) that only running a step needs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ProcessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    isolation: Literal["auto", "bwrap", "none"] = "auto"
    """`auto` and `bwrap`: bubblewrap, or every step is refused; `none`: no isolation."""
    tmp_mb: int = Field(default=128, ge=1, le=1 << 20)
    """Size of each sandbox's private /tmp (and /dev/shm), a tmpfs."""
    disk_mb: int = Field(default=2048, ge=1, le=1 << 20)
    """What a command may write: the largest file, and the workspace's total size. At most
    1 TiB: an ext4 image of it takes mke2fs 0.02 s and 12 MiB of metadata in memory (and
    in each VM's copy); 1 PiB took 30 s and GBs of RAM, then failed."""
    disk_cap: Literal["mount", "measured"] = "mount"
    """`mount`: each workspace is a filesystem of its own that holds `disk_mb` and
    `max_files` (a loop-mounted image, `vm/diskcap.py`: a root engine), or every step is
    refused; `measured`: a folder of the home's disk, measured every 50 ms (a fast writer
    overshoots `disk_mb` by what it writes meanwhile)."""
    memory_cap: Literal["cgroup", "rlimit"] = "cgroup"
    """`cgroup`: each VM is a memory cgroup of its own that holds its processes' whole
    memory (memfd, tmpfs, page cache and kernel memory too) to the agent's `memory_mb`
    plus its two tmpfs of `tmp_mb`, with no swap past it (`vm/memcap.py`), or every step
    is refused; `rlimit`: only each process's address space is limited (`memory_mb` +
    256 MiB), which memfd, tmpfs, pipes and many processes each under it pass."""
    max_files: int = Field(default=100_000, ge=10, le=1 << 24)
    """How many files, folders and links the workspace may hold (empty files take no
    blocks, so `disk_mb` alone would not stop a command filling the host's inode table).
    At most 16,777,216 (2^24): mke2fs refused 2^30 outright."""
