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
            stuck = Path(vm.info().workspace or "").parent / "stuck\ninjected line"
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
            assert remove_folder(path.parent) is None  # as `cleanup` would, later
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


class _Rows:
    """The pool's `Recorder` contract, kept as a list of calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def booting(self, vm_id: str, backend: str, spec: VMSpec) -> None:
        self.calls.append(("booting", vm_id))

    async def ready(self, vm_id: str, info: object) -> None:  # pragma: no cover
        self.calls.append(("ready", vm_id))

    async def destroyed(self, vm_id: str, error: str | None) -> None:
        self.calls.append(("destroyed", f"{vm_id}: {error}"))


class _SlowRows:
    """A recorder whose `booting` record lands at once but whose wait for it never ends
    (as a store write does when the wait is cancelled while the store thread writes)."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}
        self.writing = asyncio.Event()

    async def booting(self, vm_id: str, backend: str, spec: VMSpec) -> None:
        self.rows[vm_id] = "booting"
        self.writing.set()
        await asyncio.Event().wait()

    async def ready(self, vm_id: str, info: object) -> None:  # pragma: no cover
        self.rows[vm_id] = "ready"

    async def destroyed(self, vm_id: str, error: str | None) -> None:
        self.rows[vm_id] = f"failed: {error}"


async def test_a_cancel_during_the_boot_record_leaves_no_vm_booting(tmp_path: Path) -> None:
    """A step cancelled (or timed out) while its VM's `booting` record is being written:
    the record is closed (`failed`, not booted), never left `booting` for good."""
    rows = _SlowRows()
    backend = ProcessBackend(tmp_path / "home", ProcessConfig())
    pool = VMPool(1, lambda _: backend, "process", rows)

    async def step() -> None:
        async with pool.acquire(VMSpec()):
            pass  # pragma: no cover - its VM is never booted

    task = asyncio.create_task(step())
    await rows.writing.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await pool.close()
    assert list(rows.rows.values()) == ["failed: not booted"]
    assert not (tmp_path / "home" / "vms").exists() or not os.listdir(tmp_path / "home" / "vms")


async def test_a_boot_cut_short_is_recorded_with_why(tmp_path: Path) -> None:
    """A VM whose boot a cancel (a ticket's timeout) cuts short is recorded failed with
    `boot failed: boot cancelled`, not with an empty reason."""
    rows = _Rows()
    backend = ProcessBackend(tmp_path / "home", ProcessConfig())
    booting = asyncio.Event()
    real_boot = backend.boot

    async def slow_boot(vm_id: str, spec: VMSpec) -> object:
        booting.set()
        await asyncio.Event().wait()
        return await real_boot(vm_id, spec)  # pragma: no cover

    backend.boot = slow_boot  # type: ignore[method-assign]
    pool = VMPool(1, lambda _: backend, "process", rows)

    async def step() -> None:
        async with pool.acquire(VMSpec()):
            pass  # pragma: no cover

    task = asyncio.create_task(step())
    await booting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await pool.close()
    (booted, gone) = rows.calls
    assert booted[0] == "booting" and gone == (
        "destroyed",
        f"{booted[1]}: boot failed: boot cancelled",
    )
