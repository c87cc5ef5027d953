"""A guest that hangs at boot costs a step one `boot_timeout`, not three (a tester's
finding: the mapped template, the copy template and the cold boot each waited it out),
and a template that failed is tried again after a while, not never again (a transient
timeout under load marked it failed for the engine's lifetime). Skipped without QEMU or
an image."""

from __future__ import annotations

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
