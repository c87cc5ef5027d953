"""A VM asking more memory or vCPUs than this host has is refused in one line before
anything boots (a tester's finding: `memory_mb 65536, vcpus 64` booted a template VM for
~40 s, failed its restore and a cold boot, and took ~60 s and 1.4 GB of QEMU per ticket).
Skipped without QEMU or an image."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from swarm_engine.errors import VMError
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.qemu import backend as qemu_backend
from swarm_engine.vm.qemu.backend import create
from swarm_engine.vm.qemu.hostfit import host_cpus, host_memory_mib

pytestmark = [pytest.mark.qemu]


@pytest.fixture
def images(qemu_images: Path) -> Path:
    return qemu_images


def _too_much_memory() -> tuple[VMSpec, str]:
    memory = host_memory_mib()
    assert memory is not None
    said = f"memory_mb {memory + 1} is more than this host's {memory:,} MiB of memory"
    return VMSpec(memory_mb=memory + 1), said


def _too_many_cpus() -> tuple[VMSpec, str]:
    cpus = host_cpus()
    word = "CPU" if cpus == 1 else "CPUs"
    said = f"vcpus {cpus + 1} is more than the {cpus} {word} this host gives the engine"
    return VMSpec(vcpus=cpus + 1), said


@pytest.mark.parametrize("ask", [_too_much_memory, _too_many_cpus], ids=["memory", "vcpus"])
@pytest.mark.parametrize("snapshot", [True, False], ids=["snapshot", "cold"])
async def test_a_vm_larger_than_the_host_is_refused_before_anything_boots(
    tmp_path: Path, images: Path, monkeypatch: pytest.MonkeyPatch, ask: Any, snapshot: bool
) -> None:
    spec, said = ask()
    started: list[object] = []
    real = qemu_backend.start_qemu

    async def counted(*args: Any, **kwargs: Any) -> Any:
        started.append(args)
        return await real(*args, **kwargs)

    monkeypatch.setattr(qemu_backend, "start_qemu", counted)
    run_dir, snapshots = tmp_path / "run", tmp_path / "snap"
    options = {
        "images_dir": str(images),
        "snapshot": snapshot,
        "snapshot_dir": str(snapshots),
        "run_dir": str(run_dir),
        "boot_timeout": 20,
    }
    backend = create(tmp_path / "home", options)
    try:
        with pytest.raises(VMError, match=f"^{re.escape(said)}$"):
            await backend.boot("vm-000000000001", spec)
    finally:
        await backend.close()
    assert started == []  # no QEMU was started: no template VM, no restore, no cold boot
    assert not run_dir.exists() or not any(run_dir.iterdir())
    assert not snapshots.exists() or not any(snapshots.rglob("*"))
