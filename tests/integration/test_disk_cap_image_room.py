"""The workspace image is sized on the disk the VMs' workspaces are on (the home's `vms/`),
not in TMPDIR: a small or full /tmp (a 1 GiB tmpfs is common) refused every step for the
engine's life. No room there now is a shortage of the host, tried again at the next boot,
never remembered as a verdict; its line names the room it needs and where."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm_engine.errors import VMError
from swarm_engine.vm.diskcap import DiskCapError
from swarm_engine.vm.process import ProcessBackend, ProcessConfig

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a root engine mounts workspaces")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs: a disk that holds one 8 MiB workspace image (~11 MiB), or none
    once filled."""
    point = tmp_path / "small"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_full_tmpdir_does_not_refuse_the_cap(
    tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (small_disk / "fill").write_bytes(b"x" * (22 << 20))
    monkeypatch.setattr(tempfile, "tempdir", str(small_disk))
    backend = ProcessBackend(tmp_path / "home", ProcessConfig(disk_mb=8, max_files=200))
    image = backend.image  # before: DiskCapError, No space left on device (in TMPDIR)
    assert image is not None
    image.close()


def test_no_room_for_the_image_now_is_waited_out_not_a_verdict(small_disk: Path) -> None:
    fill = small_disk / "fill"
    fill.write_bytes(b"x" * (22 << 20))
    backend = ProcessBackend(small_disk / "home", ProcessConfig(disk_mb=8, max_files=200))
    with pytest.raises(VMError) as short:
        _ = backend.image
    assert not isinstance(short.value, DiskCapError)
    line = str(short.value)
    assert "no room for a" in line and str(small_disk) in line, line
    assert "run the engine as root" not in line, line
    fill.unlink()
    image = backend.image  # the room is back: the cap is had (before: refused for good)
    assert image is not None
    image.close()


def test_a_disk_that_can_never_hold_the_image_is_a_verdict(small_disk: Path) -> None:
    """A home on a disk smaller in all than one image: every step is refused at once
    with the sizes, not waited out to its timeout as a shortage."""
    backend = ProcessBackend(small_disk / "home", ProcessConfig(disk_mb=64, max_files=200))
    with pytest.raises(VMError) as never:
        _ = backend.image
    line = str(never.value)
    assert (
        f"the disk of {small_disk / 'home' / 'vms'} holds 24 MiB in all, less than one"
        " workspace's image (68 MiB) (disk_mb = 64, max_files = 200); lower" in line
    ), line
    assert "CAP_SYS_ADMIN" not in line and "\n" not in line, line
    assert isinstance(backend._cap_problem, DiskCapError)  # a verdict: not tried per boot
