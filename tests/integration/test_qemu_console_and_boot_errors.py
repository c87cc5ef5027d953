"""The guest's serial console cannot fill the host's disk, and a guest that cannot boot says
why in one line, at once: QEMU's own error, or the guest kernel's panic, never a closed
channel or a 60 s wait for a QEMU that is gone. Skipped without QEMU or an image."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from swarm_engine.config import load_settings
from swarm_engine.errors import VMError
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.qemu import backend as qemu_backend
from swarm_engine.vm.qemu.backend import create
from swarm_engine.vm.qemu.doctor import unavailable
from swarm_engine.vm.qemu.folders import images_dir_for

pytestmark = [pytest.mark.qemu]
MiB = 1024 * 1024


def images() -> Path:
    return images_dir_for(load_settings().home)


@pytest.fixture(autouse=True)
def _needs_qemu() -> None:
    reason = unavailable(images())
    if reason is not None:
        pytest.skip(reason)


def _vm_id() -> str:
    return f"vm-{uuid.uuid4().hex[:12]}"


async def test_a_step_flooding_the_serial_console_leaves_a_bounded_console_log(
    tmp_path: Path,
) -> None:
    backend = create(tmp_path / "home", {"images_dir": str(images()), "snapshot": False})
    try:
        vm = await backend.boot(_vm_id(), VMSpec(timeout_seconds=120))
        try:
            flood = "head -c 1600000 /dev/zero | tr '\\0' A > /dev/ttyS0; echo done"
            res = await vm.exec(["sh", "-c", flood], timeout=120)
            assert res.exit_code == 0 and res.stdout == b"done\n", res
            log = vm.folder / "console.log"
            size = log.stat().st_size
            assert size == MiB, size  # the guest wrote 1.6 MB: the cap, its end line included
            assert log.read_bytes().endswith(b"[console.log ends at 1048576 bytes]\n")
            # the guest keeps running: its console is still read (and dropped)
            res = await vm.exec(["sh", "-c", "echo more > /dev/ttyS0; echo ok"], timeout=30)
            assert res.stdout == b"ok\n"
            assert log.stat().st_size == size
        finally:
            await vm.destroy()
    finally:
        await backend.close()


def _host_memory_mb() -> int:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(pages // MiB)


@pytest.mark.skipif(_host_memory_mb() >= 48 * 1024, reason="this host may give 64 GiB")
async def test_a_qemu_that_cannot_get_its_memory_fails_at_once_with_its_own_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The backend now refuses more memory than the host has before QEMU starts
    # (test_qemu_host_fit.py); that check is left out here to reach QEMU's own line.
    monkeypatch.setattr(qemu_backend, "fit_problem", lambda spec: None)
    backend = create(tmp_path / "home", {"images_dir": str(images()), "boot_timeout": 120})
    try:
        started = time.monotonic()
        with pytest.raises(VMError) as caught:
            await backend.boot(_vm_id(), VMSpec(memory_mb=65536))
        took = time.monotonic() - started
    finally:
        await backend.close()
    message = str(caught.value)
    assert "cannot set up guest memory" in message and "Cannot allocate memory" in message
    assert message.startswith("QEMU exited (1) before ") and "\n" not in message
    assert took < 90, took  # not the 120 s boot timeout: a QEMU that is gone (loaded host: slow)


async def test_a_qemu_vm_too_small_to_boot_is_refused_at_once(tmp_path: Path) -> None:
    backend = create(tmp_path / "home", {"images_dir": str(images())})
    try:
        started = time.monotonic()
        with pytest.raises(VMError, match=r"^memory_mb 16 is below 128, the least a qemu VM"):
            await backend.boot(_vm_id(), VMSpec(memory_mb=16))
        assert time.monotonic() - started < 5
    finally:
        await backend.close()
