"""File work on a VM's folder runs on worker threads; none of it may outlive a cancel of
the step that awaits it. A boot cancelled as its folder is made leaves no folder; a write
cancelled before its thread began never lands in a folder already deleted; `destroy`
deletes the folder only once no thread works in it.

The races are made deterministic with the loop's own default executor, whose next call
(once armed) is held on its worker thread: before the call begins, or once it has run but
before its end is told to the loop. Real process backend, real threads, real folders.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import pytest

from swarm_engine.errors import VMError
from swarm_engine.vm.base import VM, VMSpec
from swarm_engine.vm.pool import VMPool
from swarm_engine.vm.process import ProcessBackend, ProcessConfig

Hold = Literal["before", "after"]


class HeldThreads(ThreadPoolExecutor):
    """The loop's default executor. `arm(when)`: the next call handed to it is held on its
    thread until `release` is set, `before` it begins or `after` it has run; `held` is set
    once it is held, `ended` (a thread's event) as it returns. `late` lists the calls
    handed over while it was held."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(4, thread_name_prefix="held")
        self._loop = loop
        self._armed: Hold | None = None
        self._holding = False
        self.held = asyncio.Event()
        self.release = threading.Event()
        self.ended = threading.Event()
        self.late: list[str] = []

    def arm(self, when: Hold) -> None:
        self._armed = when

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        when, self._armed = self._armed, None
        if when is None:
            if self._holding:
                self.late.append(repr(args[-1] if args else fn))
            return super().submit(fn, *args, **kwargs)
        self._holding = True

        def held() -> Any:
            try:
                if when == "before":
                    self._hold()
                result = fn(*args, **kwargs)
                if when == "after":
                    self._hold()
                return result
            finally:
                self.ended.set()
                self._loop.call_soon_threadsafe(self._over)

        return super().submit(held)

    def _hold(self) -> None:
        self._loop.call_soon_threadsafe(self.held.set)
        self.release.wait(60)  # a bound for a failing test only: it is set at once

    def _over(self) -> None:
        self._holding = False


@pytest.fixture
async def threads() -> AsyncIterator[HeldThreads]:
    loop = asyncio.get_running_loop()
    held = HeldThreads(loop)
    loop.set_default_executor(held)  # before anything else runs on a thread
    try:
        yield held
    finally:
        held.release.set()


class _Rows:
    """The pool's recorder, as the `vms` rows it would write."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}

    async def booting(self, vm_id: str, backend: str, spec: VMSpec) -> None:
        self.rows[vm_id] = "booting"

    async def ready(self, vm_id: str, info: object) -> None:
        self.rows[vm_id] = "ready"

    async def destroyed(self, vm_id: str, error: str | None) -> None:
        self.rows[vm_id] = f"failed: {error}" if error else "destroyed"


async def _backend(home: Path) -> ProcessBackend:
    backend = ProcessBackend(home, ProcessConfig())
    await backend.start()  # bubblewrap probed now: a boot's first thread call is its folder
    return backend


def _folders(home: Path) -> list[str]:
    return sorted(os.listdir(home / "vms")) if (home / "vms").exists() else []


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_boot_cancelled_as_its_folder_is_made_leaves_no_folder(
    tmp_path: Path, threads: HeldThreads, when: Hold
) -> None:
    """A step cancelled (its ticket's timeout, `ticket cancel`) while a worker thread makes
    its VM's folder: `before` the thread began, the folder is never made; `after` it made
    it, the cancel waits for the thread and the folder is deleted again. Either way the
    cancel goes on, the VM's row is `failed` and no folder is left for `cleanup`."""
    home = tmp_path / "home"
    rows = _Rows()
    backend = await _backend(home)
    pool = VMPool(1, lambda _: backend, "process", rows)

    async def step() -> None:
        async with pool.acquire(VMSpec()):
            pass  # pragma: no cover - its VM is never booted

    threads.arm(when)
    task = asyncio.create_task(step())
    await threads.held.wait()
    task.cancel()
    if when == "before":  # the call not begun is dropped: the step ends without it
        with pytest.raises(asyncio.CancelledError):
            await task
        threads.release.set()
    else:  # the call begun is waited for
        threads.release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.to_thread(threads.ended.wait)  # the held thread is done, whatever it did
    await pool.close()
    assert list(rows.rows.values()) == ["failed: boot failed: boot cancelled"]
    assert _folders(home) == [], "a cancelled boot left its VM folder"


async def test_a_write_cancelled_before_its_thread_began_never_lands(
    tmp_path: Path, threads: HeldThreads
) -> None:
    """A step cancelled while the file it writes into its VM (its inputs file) waits for a
    worker thread: the write never happens, so it cannot land in the VM's folder as that
    is deleted (`Directory not empty`) or after (making the folder again)."""
    home = tmp_path / "home"
    rows = _Rows()
    backend = await _backend(home)
    pool = VMPool(1, lambda _: backend, "process", rows)
    booted: list[VM] = []

    async def step() -> None:
        async with pool.acquire(VMSpec()) as vm:
            booted.append(vm)
            threads.arm("before")
            await vm.put_file(".swarm/inputs.json", b"{}")

    task = asyncio.create_task(step())
    await threads.held.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    threads.release.set()  # only now may the held thread go on
    await asyncio.to_thread(threads.ended.wait)
    await pool.close()
    assert list(rows.rows.values()) == ["destroyed"]
    assert _folders(home) == [], "a cancelled write made the VM's folder again"
    assert not await booted[0].is_alive()


async def test_destroy_waits_for_the_file_work_under_way_in_its_folder(
    tmp_path: Path, threads: HeldThreads
) -> None:
    """A VM destroyed (by another task) while a worker thread writes in its folder: the
    folder is deleted only once that write is over, never beside it; the write is not
    lost, and nothing more may be written once the destruction began."""
    home = tmp_path / "home"
    backend = await _backend(home)
    vm = await backend.boot("vm-quiescent", VMSpec())
    threads.arm("after")
    writer = asyncio.create_task(vm.put_file("made/inputs.json", b"{}"))
    await threads.held.wait()  # the file is written; its thread has not ended yet
    destroyer = asyncio.create_task(vm.destroy())
    await asyncio.sleep(0)  # the destroyer's first step runs before this task's next one
    assert threads.late == [], "destroy began deleting while a write was under way"
    with pytest.raises(VMError, match="is destroyed"):
        await vm.put_file("more.json", b"{}")
    threads.release.set()
    await writer
    await destroyer
    await backend.close()
    assert _folders(home) == []


async def test_a_write_onto_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """A step's FIFO where a file is written (an agent's tool writing to a path the step
    chose) is refused at once: the write's thread never blocks waiting for a reader, so a
    cancel of the step (which waits for that thread) cannot hang."""
    backend = await _backend(tmp_path / "home")
    vm = await backend.boot("vm-fifo", VMSpec())
    fifo = Path(vm.info().workspace or "") / "pipe"
    os.mkfifo(fifo)
    try:
        with pytest.raises(VMError, match="pipe: not a regular file"):
            await asyncio.wait_for(vm.put_file("pipe", b"data"), 30)
    finally:  # a write that blocked (the bug) is let go, so that the loop can close
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        os.close(reader)
        await vm.destroy()
        await backend.close()
