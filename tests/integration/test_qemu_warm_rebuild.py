"""The warm pool never hands out a VM booted from an older build of the image (a tester's
finding: the backend said "image tiny changed on disk; using the new build", then handed
out the warm VM booted before the change). Skipped without QEMU or an image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.support.images import linked_image

from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.qemu.backend import create

pytestmark = [pytest.mark.qemu]


@pytest.fixture
def images(qemu_images: Path) -> Path:
    return qemu_images


async def test_a_warm_vm_of_an_older_build_is_never_handed_out(
    tmp_path: Path, images: Path
) -> None:
    folder, manifest = linked_image(images, tmp_path)
    options = {
        "images_dir": str(folder.parent),
        "image": folder.name,
        "warm": 1,
        "snapshot_dir": str(tmp_path / "snap"),
        "run_dir": str(tmp_path / "run"),
    }
    backend = create(tmp_path / "home", options)
    try:
        await backend.start()
        pool = backend.warm_pool
        assert pool is not None
        await pool.wait_ready(timeout=120)
        old = pool._ready[0]
        manifest["cmdline"] = f"{manifest.get('cmdline', '')} swarm.build=2"  # a new build
        (folder / ".manifest.new").write_text(json.dumps(manifest))
        (folder / ".manifest.new").replace(folder / "manifest.json")
        vm = await backend.boot("vm-000000000001", VMSpec())
        try:
            assert vm is not old
            assert b"swarm.build=2" in (await vm.exec("cat /proc/cmdline")).stdout
        finally:
            await vm.destroy()
        assert not old.folder.exists()  # destroyed, not left running
        await pool.wait_ready(timeout=120)  # refilled, from the new build
        vm = await backend.boot("vm-000000000002", VMSpec())
        try:
            assert vm.folder.name.startswith("warm-")  # the pool serves again
            assert b"swarm.build=2" in (await vm.exec("cat /proc/cmdline")).stdout
        finally:
            await vm.destroy()
    finally:
        await backend.close()
