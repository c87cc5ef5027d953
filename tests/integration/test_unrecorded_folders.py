"""What an engine killed mid-way leaves in the home's `vms/` with no `vms` row: the disk
cap's sizing folder (`swarm-diskcap-*`, an image mounted on its `mnt/`), a VM folder
whose workspace is still mounted, and spare workspaces (`.spare-*`, vm/spares.py). Both stayed (mounted) for ever; `cleanup` and each
engine's start (`engine.reaper.cleanup`) now unmount and delete them, only when no
running engine owns them."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import Target
from tests.integration.conftest import dead_pid
from tests.support.cli import swarm

from swarm_engine.engine.reaper import UNOWNED_GRACE, cleanup
from swarm_engine.store import open_store
from swarm_engine.vm.diskcap import SCRATCH_PREFIX, Template, mount_image
from swarm_engine.vm.owner import OWNER_XATTR, pid_namespace

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/loop-control") or not shutil.which("mke2fs"),
    reason="a root engine with loop devices and mke2fs mounts workspaces",
)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Template]:
    template = Template.build(8, 200, tmp_path_factory.mktemp("sizing"))
    yield template
    template.close()


def owned_by(folder: Path, pid: int | None) -> Path:
    folder.mkdir(parents=True)
    if pid is not None:
        os.setxattr(folder, OWNER_XATTR, f"{pid} {pid_namespace()}\n".encode())
    return folder


def mounted(folder: Path, image: Template, point: str) -> Path:
    image.write(folder / "workspace.img")
    (folder / point).mkdir()
    mount_image(folder / "workspace.img", folder / point)
    assert os.path.ismount(folder / point)
    return folder / point


def leftovers(vms: Path, image: Template, live: int) -> dict[str, Path]:
    """The folders of `vms/`, by what they stand for; the `live_*` ones a running
    engine's, the others a dead one's."""
    old = time.time() - UNOWNED_GRACE - 60
    dead = dead_pid()
    folders = {
        "dead_scratch": owned_by(vms / f"{SCRATCH_PREFIX}a1", dead),
        "old_unowned_scratch": owned_by(vms / f"{SCRATCH_PREFIX}b2", None),
        "dead_vm": owned_by(vms / "vm-dead", dead),
        "dead_spare": owned_by(vms / ".spare-d4", dead),
        "live_spare": owned_by(vms / ".spare-e5", live),
        "live_scratch": owned_by(vms / f"{SCRATCH_PREFIX}c3", live),
        "live_vm": owned_by(vms / "vm-live", live),
        "young_unowned_vm": owned_by(vms / "vm-young", None),
    }
    for name, folder in folders.items():
        mounted(folder, image, "mnt" if "scratch" in name else "workspace")
    os.utime(folders["old_unowned_scratch"], (old, old))
    return folders


def check(folders: dict[str, Path], reaped: list[str]) -> None:
    for name, folder in folders.items():
        point = folder / ("mnt" if "scratch" in name else "workspace")
        if name.startswith(("live", "young")):
            assert os.path.ismount(point), name  # a live engine's: never touched
            assert folder.name not in reaped
        else:
            assert not folder.exists(), name
            assert folder.name in reaped
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        points = [line.split()[4] for line in info]
    home = str(next(iter(folders.values())).parent)  # this test's own, not another's
    gone = ("-dead/", "a1/", "b2/", "d4/")
    assert not [p for p in points if p.startswith(home) and any(g in p for g in gone)]


def test_cleanup_unmounts_and_deletes_a_dead_engine_s_unrecorded_folders(
    tmp_path: Path, store_target: Target, image: Template, live_engine: int
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    open_store(store_target.target).close()  # the store made
    folders = leftovers(home / "vms", image, live_engine)
    done = swarm(home, "cleanup", "--json", **store_target.env)
    assert done.returncode == 0, done.stderr
    check(folders, json.loads(done.stdout)["folders"])


def test_an_engine_s_start_reaps_them_too(
    tmp_path: Path, store_target: Target, image: Template, live_engine: int
) -> None:
    """The engine's start runs `cleanup` without a store target (its own lock held)."""
    home = tmp_path / "home"
    home.mkdir()
    folders = leftovers(home / "vms", image, live_engine)
    store = open_store(store_target.target)
    try:
        report = cleanup(store, home, "here")
    finally:
        store.close()
    check(folders, report.folders)


def test_each_folder_records_its_engine_the_moment_it_is_made(
    tmp_path: Path, image: Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before anything is mounted in it: a kill at any later point leaves a folder that
    names a dead engine (reaped at once), not one that names none (left for a grace)."""
    from swarm_engine.vm.owner import owner_of
    from swarm_engine.vm.workspace import prepare_folder

    seen: list[tuple[int | None, bool]] = []
    real_mount = mount_image

    def mount_and_look(image_path: Path, target: Path) -> None:
        seen.append(owner_of(target.parent))
        real_mount(image_path, target)

    monkeypatch.setattr("swarm_engine.vm.workspace.mount_image", mount_and_look)
    monkeypatch.setattr("swarm_engine.vm.diskcap.mount_image", mount_and_look)
    prepare_folder(tmp_path / "vms" / "vm-1", False, None, image)
    Template.build(8, 200, tmp_path / "vms").close()
    assert len(seen) >= 2 and set(seen) == {(os.getpid(), False)}  # (sizing may mount twice)
    assert [p.name for p in (tmp_path / "vms").iterdir()] == ["vm-1"]  # sizing folder gone
    from swarm_engine.vm.workspace import remove_folder

    assert remove_folder(tmp_path / "vms" / "vm-1") is None
