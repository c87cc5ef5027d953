"""A destroyed VM's capped workspace is emptied and kept mounted for the next VM
(`vm/spares.py`): the next VM finds nothing of the step before, and a workspace that
does not empty to a new one's counts is deleted, not kept. Real bubblewrap, real loop
devices (a root engine, as in CI).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.diskcap import IMAGE_NAME, folder_flags
from swarm_engine.vm.process import ProcessBackend, ProcessConfig, ProcessVM, bwrap_problem
from swarm_engine.vm.spares import MOST_SPARES, is_spare

pytestmark = [
    pytest.mark.skipif(bwrap_problem() is not None, reason=f"{bwrap_problem()}"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a root engine mounts each workspace"),
]

SPEC = VMSpec(timeout_seconds=30)


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[ProcessBackend]:
    backend = ProcessBackend(tmp_path / "home", ProcessConfig(disk_mb=8, max_files=3000))
    await backend.start()
    yield backend
    await backend.close()


def mounts() -> list[list[str]]:
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        return [line.split() for line in info]


def device_of(mount_point: Path) -> str:
    for fields in mounts():
        if fields[4] == str(mount_point):
            return fields[fields.index("-") + 2]
    raise AssertionError(f"{mount_point} is not mounted")


def spares(backend: ProcessBackend) -> list[str]:
    return sorted(name for name in os.listdir(backend.root) if is_spare(name))


async def test_the_next_vm_finds_nothing_of_the_step_before(backend: ProcessBackend) -> None:
    first = await backend.boot("vm-sp0001", SPEC)
    device = device_of(first.workspace)
    await first.put_file("inputs.json", b'{"secret": 1}')
    res = await first.exec(
        "mkdir -p .hidden/deep/er && echo s > .hidden/deep/er/f && ln -s / root-link"
        ' && mkfifo pipe && chmod 777 . && python3 -c \'import os; os.setxattr(".",'
        ' "user.mark", b"1")\' && chattr +S +A +D +d .'
        ' && touch -a -m -d "2031-05-05 05:05:05" . && echo done'
    )
    assert res.stdout == b"done\n", res
    await first.destroy()
    assert spares(backend) != [] and not first.folder.exists()

    second = await backend.boot("vm-sp0002", SPEC)
    try:
        assert device_of(second.workspace) == device  # the same filesystem, emptied
        assert os.listdir(second.workspace) == []
        info = os.stat(second.workspace)
        assert (info.st_mode & 0o7777, info.st_uid) == (0o700, second.host_uid)
        assert os.listxattr(second.workspace) == []
        assert folder_flags(second.workspace) == backend.image.root_flags  # chattr undone
        assert info.st_atime < time.time() + 60 and info.st_mtime < time.time() + 60
        res = await second.exec("ls -A; echo end")
        assert res.stdout == b"end\n", res
        assert spares(backend) == []
    finally:
        await second.destroy()


async def test_a_workspace_that_does_not_empty_to_a_new_one_is_deleted(
    backend: ProcessBackend,
) -> None:
    """A root folder grown by 2,000 long names keeps its blocks once emptied (ext4 does
    not shrink a folder): its counts differ from a new workspace's, so it is not kept."""
    vm = await backend.boot("vm-sp0003", SPEC)
    res = await vm.exec(
        "i=0; while [ $i -lt 2000 ]; do : > $i-$(printf '%0200d' 0); i=$((i+1)); done; echo ok"
    )
    assert res.stdout == b"ok\n", res
    device = device_of(vm.workspace)
    await vm.destroy()
    assert spares(backend) == [] and not vm.folder.exists()
    assert all(device not in fields for fields in mounts())


async def test_spares_are_bounded_and_go_with_the_backend(backend: ProcessBackend) -> None:
    many = MOST_SPARES + 4
    vms: list[ProcessVM] = await asyncio.gather(
        *(backend.boot(f"vm-sp1{i:03d}", SPEC) for i in range(many))
    )
    await asyncio.gather(*(vm.destroy() for vm in vms))
    assert len(spares(backend)) == MOST_SPARES
    await backend.close()
    assert os.listdir(backend.root) == []
    assert all(not fields[4].startswith(str(backend.root)) for fields in mounts())


async def test_a_spare_gives_the_host_back_what_the_step_wrote(backend: ProcessBackend) -> None:
    """An emptied workspace is trimmed: its image holds no more of the host's disk than
    a new one's, not the 6 MiB the step wrote and deleted."""
    first = await backend.boot("vm-sp2001", SPEC)
    new_image = (first.folder / IMAGE_NAME).stat().st_blocks
    res = await first.exec("head -c 6M /dev/urandom > big && sync && echo ok")
    assert res.stdout == b"ok\n", res
    assert (first.folder / IMAGE_NAME).stat().st_blocks > new_image + 6 * 2048 * 0.9
    await first.destroy()
    [spare] = spares(backend)
    assert (backend.root / spare / IMAGE_NAME).stat().st_blocks < new_image + 1024
