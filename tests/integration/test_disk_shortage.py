"""A full disk under the engine's home is a shortage of the host, waited out like one
(`vm/shortage.py`): writing a step's inputs file into its VM waits until there is room,
and the daemon claims nothing meanwhile, instead of failing every ticket it can claim
within milliseconds (`No space left on device`). Real process backend on a real 4 MiB
tmpfs, filled for real. A workspace that is a filesystem of its own (`disk_cap =
"mount"`, the default) reserves its room on the host as its VM boots: there the boot waits;
the folder-workspace tests set `disk_cap = "measured"`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.disk import fill, small_tmpfs

from swarm_engine.errors import VMError
from swarm_engine.vm import shortage
from swarm_engine.vm.base import VM, VMSpec
from swarm_engine.vm.process import ProcessBackend, ProcessConfig


@pytest.fixture
async def vm(tmp_path: Path) -> AsyncIterator[VM]:
    with small_tmpfs(tmp_path / "small") as disk:
        backend = ProcessBackend(disk / "vms", ProcessConfig(disk_cap="measured"))
        machine = await backend.boot("vm-fulldisk", VMSpec(timeout_seconds=60))
        try:
            yield machine
        finally:
            await machine.destroy()
            await backend.close()


async def _until_waiting() -> None:
    for _ in range(3000):  # bounded poll of a state the write reaches at once
        if shortage.waiting():
            return
        await asyncio.sleep(0.01)  # sleep-ok: polling a counter that has no event
    raise AssertionError("the write never began to wait out the full disk")


async def test_a_write_into_a_vm_on_a_full_disk_waits_for_room(vm: VM) -> None:
    filler = fill(vm.workspace.parent.parent.parent)
    writing = asyncio.ensure_future(vm.put_file(".swarm/inputs.json", b'{"n": 1}' * 4096))
    await _until_waiting()
    assert not writing.done()  # waiting: neither written nor failed
    filler.unlink()
    await asyncio.wait_for(writing, 30)
    assert await vm.get_file(".swarm/inputs.json") == b'{"n": 1}' * 4096
    assert not shortage.waiting()


async def test_a_disk_that_stays_full_fails_the_write_at_its_deadline(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small") as disk:
        backend = ProcessBackend(disk / "vms", ProcessConfig(disk_cap="measured"))
        machine = await backend.boot("vm-fulldisk2", VMSpec(timeout_seconds=0.5))
        try:
            fill(disk)
            with pytest.raises(VMError, match=r"no disk space free \(ENOSPC\) for .*s: free"):
                await machine.put_file("big.bin", b"x" * 65536)
        finally:
            await machine.destroy()
            await backend.close()


async def test_a_capped_workspace_waits_for_its_room_as_its_vm_boots(tmp_path: Path) -> None:
    """The image of a capped workspace is reserved whole as its VM boots: on a full disk
    the boot waits (nothing half made meanwhile), and goes on once there is room."""
    with small_tmpfs(tmp_path / "small") as disk:
        backend = ProcessBackend(disk / "vms", ProcessConfig(disk_mb=1, max_files=10))
        await backend.start()
        filler = fill(disk)
        booting = asyncio.ensure_future(backend.boot("vm-fulldisk3", VMSpec(timeout_seconds=60)))
        try:
            await _until_waiting()
            assert not booting.done() and not (disk / "vms" / "vms" / "vm-fulldisk3").exists()
            filler.unlink()
            machine = await asyncio.wait_for(booting, 30)
            try:
                assert (await machine.exec("echo ok > f && cat f")).stdout == b"ok\n"
            finally:
                await machine.destroy()
        finally:
            booting.cancel()
            await backend.close()
