"""The VM pool on the real process backend: a VM keeps its slot until it is gone."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.pool import VMPool
from swarm_engine.vm.process import ProcessBackend, ProcessConfig
from swarm_engine.vm.workspace import remove_folder


async def test_a_cancel_during_destruction_keeps_the_slot_until_the_vm_is_gone(
    tmp_path: Path,
) -> None:
    """A step cancelled while its VM is being destroyed (a big workspace takes a while to
    delete) holds its `max_vms` slot, and is recorded destroyed, only once the VM's folder
    is gone; then the cancel goes on. The next VM never boots beside it."""
    backend = ProcessBackend(tmp_path / "home", ProcessConfig())
    pool = VMPool(1, lambda _: backend, "process")
    spec = VMSpec(timeout_seconds=120)
    leaving = asyncio.Event()
    gone: dict[str, bool] = {}
    folders: list[Path] = []

    def on_destroyed(vm_id: str, error: str | None) -> None:
        assert error is None
        gone[vm_id] = folders[0].exists()  # recorded only once it is really gone

    async def first() -> None:
        async with pool.acquire(spec, on_destroyed=on_destroyed) as vm:
            folders.append(Path(vm.info().workspace or "").parent)
            made = await vm.exec("mkdir d && cd d && seq 1 40000 | xargs touch && echo made")
            assert made.stdout == b"made\n", made
            leaving.set()  # its destruction starts as this block ends

    async def second() -> bool:
        async with pool.acquire(spec) as vm:
            assert vm.info().workspace
            return folders[0].exists()

    a = asyncio.create_task(first())
    await leaving.wait()
    b = asyncio.create_task(second())
    a.cancel()  # while the first VM's 40,000 files are being deleted
    try:
        results = await asyncio.gather(a, b, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError), results
        assert results[1] is False, "the next VM booted while the first one's folder existed"
        assert list(gone.values()) == [False]
    finally:
        await pool.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a file system in the folder")
async def test_a_vm_folder_that_cannot_be_deleted_is_a_failed_destroy(tmp_path: Path) -> None:
    """A VM whose folder stays (here: a file system mounted in it, as an fd shortage or a
    busy disk would) is recorded as a failed destruction with the reason, never as
    destroyed; `cleanup` deletes such folders later."""
    backend = ProcessBackend(tmp_path / "home", ProcessConfig())
    pool = VMPool(1, lambda _: backend, "process")
    recorded: list[tuple[str, str | None]] = []
    mounted: list[Path] = []
    try:
        async with pool.acquire(VMSpec(), on_destroyed=lambda *a: recorded.append(a)) as vm:
            stuck = Path(vm.info().workspace or "") / "stuck\ninjected line"
            stuck.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "none", str(stuck)], check=True)
            mounted.append(stuck)
        [(vm_id, error)] = recorded
        assert error is not None and error.startswith("destroy failed: could not delete VM folder")
        assert vm_id in error and stuck.exists()
        assert "\n" not in error and "stuck\\ninjected line: Device or resource busy" in error
    finally:
        for path in mounted:
            subprocess.run(["umount", str(path)], check=False)
        await pool.close()


def test_removing_a_folder_that_is_gone_already_is_fine(tmp_path: Path) -> None:
    """A VM folder another process (the reaper, `cleanup`) deleted first is simply gone."""
    assert remove_folder(tmp_path / "never-made") is None
    made = tmp_path / "made" / "workspace"
    made.mkdir(parents=True)
    (made / "f").write_text("x")
    assert remove_folder(tmp_path / "made") is None and not (tmp_path / "made").exists()


OUT_OF_FDS = r"""
import errno, os, resource, sys
from pathlib import Path
from swarm_engine.vm.workspace import remove_folder

folder = Path(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
held = []
while True:
    try:
        held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as exc:
        assert exc.errno == errno.EMFILE
        break
print(remove_folder(folder))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a file system in the folder")
def test_a_folder_left_for_lack_of_fds_is_named_as_it_is(tmp_path: Path) -> None:
    """Out of file descriptors, the line saying what was left names the folder and why,
    not a file the engine failed to load to write that line."""
    stuck = tmp_path / "vm-x" / "workspace" / "stuck"
    stuck.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "none", str(stuck)], check=True)
    try:
        import sys

        done = subprocess.run(
            [sys.executable, "-c", OUT_OF_FDS, str(tmp_path / "vm-x")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        subprocess.run(["umount", str(stuck)], check=False)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith(f"could not delete VM folder {tmp_path / 'vm-x'}: "), line
    assert line.endswith(": Too many open files") and "encodings" not in line, line
