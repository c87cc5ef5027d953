"""A guest that hangs at boot costs a step one `boot_timeout`, not three (a tester's
finding: the mapped template, the copy template and the cold boot each waited it out),
and a template that failed is tried again after a while, not never again (a transient
timeout under load marked it failed for the engine's lifetime). Skipped without QEMU or
an image. Steps of other template keys wait for a template boot at most their own
`boot_timeout` (the engine's one lock made the third of three wait two others' out)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.support.images import linked_image, write_manifest

from swarm_engine.errors import VMError
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.qemu import backend as qemu_backend
from swarm_engine.vm.qemu import templating
from swarm_engine.vm.qemu.backend import create
from swarm_engine.vm.qemu.machine import MachineSpec

pytestmark = [pytest.mark.qemu]

NOT_AGAIN = "not tried again as a copy template or a cold boot in this step"


@pytest.fixture
def images(qemu_images: Path) -> Path:
    return qemu_images


def _hanging_image(images: Path, tmp_path: Path) -> Path:
    """A copy of the test image whose guest hangs at boot: no init to run, and a kernel
    that waits forever after its panic (`panic=0`) instead of rebooting."""
    folder, manifest = linked_image(images, tmp_path)
    words = str(manifest.get("cmdline") or "console=ttyS0 quiet panic=-1 rdinit=/init").split()
    words = [w for w in words if not w.startswith(("panic=", "rdinit="))]
    manifest["cmdline"] = " ".join([*words, "panic=0", "rdinit=/swarm-missing"])
    write_manifest(folder, manifest)
    return folder.parent


async def test_a_guest_that_hangs_at_boot_costs_one_boot_timeout(
    tmp_path: Path, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    real = qemu_backend.start_qemu

    async def counted(machine: MachineSpec, *args: Any) -> Any:
        started.append("template" if machine.qmp_socket is not None else "cold")
        return await real(machine, *args)

    monkeypatch.setattr(qemu_backend, "start_qemu", counted)
    options = {
        "images_dir": str(_hanging_image(images, tmp_path)),
        "snapshot_dir": str(tmp_path / "snap"),
        "run_dir": str(tmp_path / "run"),
        "boot_timeout": 4,
    }
    backend = create(tmp_path / "home", options)
    try:
        with pytest.raises(VMError, match=NOT_AGAIN) as first:
            await backend.boot("vm-000000000001", VMSpec())
        assert "was not ready within 4 s" in str(first.value)
        assert started == ["template"]  # neither a copy template nor a cold boot after it
        # The next step boots cold while the templates wait (its own one boot_timeout).
        with pytest.raises(VMError, match="was not ready within 4 s") as second:
            await backend.boot("vm-000000000002", VMSpec())
        assert NOT_AGAIN not in str(second.value)
        assert started == ["template", "cold"]
        # Once the wait is over the template is tried again (time moved, not slept).
        monkeypatch.setattr(templating, "TEMPLATE_RETRY_AFTER", 0.0)
        with pytest.raises(VMError, match=NOT_AGAIN):
            await backend.boot("vm-000000000003", VMSpec())
        assert started == ["template", "cold", "template"]
    finally:
        await backend.close()


async def test_steps_of_other_keys_wait_at_most_their_boot_timeout_for_a_template_boot(
    tmp_path: Path, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three steps of three template keys (three memory sizes) start at once on a guest
    that hangs at boot: each one's first QEMU starts within about its boot_timeout (it
    waited for the others' template boots at most that long, then booted cold), and no
    two template VMs ever run side by side (`TEMPLATE_BOOTS`)."""
    boot_timeout, sizes = 4.0, (256, 320, 384)
    loop = asyncio.get_running_loop()
    first_start: dict[int, float] = {}
    templates_up: list[asyncio.subprocess.Process] = []
    side_by_side: list[int] = []
    real = qemu_backend.start_qemu

    async def watched(machine: MachineSpec, *args: Any) -> Any:
        first_start.setdefault(machine.memory_mb, loop.time())
        if machine.qmp_socket is not None:  # a template VM: none other may still run
            side_by_side.extend(p.pid for p in templates_up if p.returncode is None)
        proc = await real(machine, *args)
        if machine.qmp_socket is not None:
            templates_up.append(proc)
        return proc

    monkeypatch.setattr(qemu_backend, "start_qemu", watched)
    options = {
        "images_dir": str(_hanging_image(images, tmp_path)),
        "snapshot_dir": str(tmp_path / "snap"),
        "run_dir": str(tmp_path / "run"),
        "boot_timeout": boot_timeout,
    }
    backend = create(tmp_path / "home", options)
    try:
        began = loop.time()
        ended = await asyncio.gather(
            *(
                backend.boot(f"vm-00000000000{i}", VMSpec(memory_mb=mb))
                for i, mb in enumerate(sizes)
            ),
            return_exceptions=True,
        )
    finally:
        await backend.close()
    for result in ended:
        assert isinstance(result, VMError), result
        assert "was not ready within 4 s" in str(result)
    assert sorted(first_start) == list(sizes)
    waits = {mb: at - began for mb, at in first_start.items()}
    # The wait for others is at most boot_timeout; half of it more for starting QEMU on a
    # loaded host. One lock for every key made the third wait two boot_timeouts (8 s).
    assert max(waits.values()) < boot_timeout * 1.5, waits
    assert side_by_side == []
    assert len(templates_up) >= 1
