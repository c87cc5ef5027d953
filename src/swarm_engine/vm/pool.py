"""The VM pool: at most `max_vms` VMs at once per engine, a fresh VM for every step.

`acquire()` waits for a slot, boots a VM on the chosen backend, hands it out, and
always destroys it afterwards, even when the step fails or is cancelled (a cancel that
comes while the VM is being destroyed waits for that to end: the VM keeps its slot, and
is recorded destroyed, only once it is gone). Every
transition is reported to a `VMRecorder` (the engine records them in the `vms` table;
its methods are coroutines, so a slow store never blocks the event loop).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

from swarm_engine.errors import VMError
from swarm_engine.vm.base import VM, VMBackend, VMInfo, VMSpec
from swarm_engine.vm.output import DEFAULT_KEEP


class VMRecorder(Protocol):
    async def booting(self, vm_id: str, backend: str, spec: VMSpec) -> None: ...
    async def ready(self, vm_id: str, info: VMInfo) -> None: ...
    async def destroyed(self, vm_id: str, error: str | None) -> None: ...


class NullRecorder:
    async def booting(self, vm_id: str, backend: str, spec: VMSpec) -> None:
        pass

    async def ready(self, vm_id: str, info: VMInfo) -> None:
        pass

    async def destroyed(self, vm_id: str, error: str | None) -> None:
        pass


log = logging.getLogger(__name__)

BackendFactory = Callable[[str], VMBackend]


class VMPool:
    def __init__(
        self,
        max_vms: int,
        backend_factory: BackendFactory,
        default_backend: str,
        recorder: VMRecorder | None = None,
    ) -> None:
        if max_vms < 1:
            raise ValueError("max_vms must be at least 1")
        self.max_vms = max_vms
        self.default_backend = default_backend
        self._factory = backend_factory
        self._backends: dict[str, VMBackend] = {}
        self._slots = asyncio.Semaphore(max_vms)
        self._recorder = recorder or NullRecorder()
        self._live: dict[str, VM] = {}
        self.peak = 0

    @property
    def busy(self) -> int:
        return len(self._live)

    @property
    def live_ids(self) -> list[str]:
        return list(self._live)

    def backend(self, name: str | None = None) -> VMBackend:
        key = name or self.default_backend
        if key not in self._backends:
            self._backends[key] = self._factory(key)
        return self._backends[key]

    async def start(self) -> None:
        """Start the default backend (warm pools fill now, not at the first step)."""
        await self.backend().start()

    @asynccontextmanager
    async def acquire(
        self,
        spec: VMSpec,
        backend: str | None = None,
        on_ready: Callable[[VM], Any] | None = None,
        on_destroyed: Callable[[str, str | None], None] | None = None,
    ) -> AsyncIterator[VM]:
        """A fresh VM for one step; destroyed on exit, whatever happens.

        `on_ready(vm)`, if given, runs once the VM is up and takes over recording it as
        ready (so the engine can do that in the same transaction as the step's start).
        `on_destroyed(vm_id, error)`, if given, is called once the VM is destroyed and
        takes over recording that (the engine records it with the step's end)."""
        chosen = self.backend(backend)
        cancelled = False  # while the VM was being destroyed: raised once it is gone
        async with self._slots:
            vm_id = f"vm-{uuid.uuid4().hex[:12]}"
            try:
                await self._recorder.booting(vm_id, chosen.name, spec)
            except BaseException:
                # the record may have been written although its wait was cut short (a
                # cancel, a ticket's timeout): it must not stay `booting`
                await asyncio.shield(self._recorder.destroyed(vm_id, "not booted"))
                raise
            try:
                vm = await chosen.boot(vm_id, spec)
            except BaseException as exc:
                why = "boot cancelled" if isinstance(exc, asyncio.CancelledError) else exc
                await asyncio.shield(self._recorder.destroyed(vm_id, f"boot failed: {why}"))
                if isinstance(exc, Exception) and not isinstance(exc, VMError):
                    raise VMError(f"{chosen.name} backend could not boot a VM: {exc}") from exc
                raise
            if vm_id in self._live:  # pragma: no cover - would be a pool bug
                raise VMError(f"VM {vm_id} handed out twice")
            self._live[vm_id] = vm
            self.peak = max(self.peak, len(self._live))
            error: str | None = None
            try:
                if on_ready is None:
                    await self._recorder.ready(vm_id, vm.info())
                else:  # the caller records the VM as ready with its own first use
                    maybe = on_ready(vm)
                    if inspect.isawaitable(maybe):
                        await maybe
                yield vm
            finally:
                try:  # destroy failures are recorded, not hidden
                    cancelled, error = await _destroy(vm)
                    if error is not None:
                        log.warning("VM %s: %s", vm_id, error, extra={"vm_id": vm_id})
                finally:
                    self._live.pop(vm_id, None)
                    if on_destroyed is not None:
                        on_destroyed(vm_id, error)
                    else:
                        await asyncio.shield(self._recorder.destroyed(vm_id, error))
        if cancelled:
            raise asyncio.CancelledError

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()
        self._backends.clear()


async def _destroy(vm: VM) -> tuple[bool, str | None]:
    """Destroy `vm` to the end, even when cancelled meanwhile: the VM keeps its slot, and
    its recorded end its time, until it is really gone. Returns whether a cancel came
    (the caller raises it then) and what the destruction failed with, if it did."""
    job = asyncio.ensure_future(vm.destroy())
    cancelled = False
    while not job.done():
        try:
            await asyncio.wait([job])  # a cancel stops this wait, never the destruction
        except asyncio.CancelledError:
            cancelled = True
    if job.cancelled():  # pragma: no cover - a backend that cancels its own destroy
        return True, "destroy failed: cancelled"
    exc = job.exception()
    return cancelled, None if exc is None else f"destroy failed: {exc}"


def spec_for(
    agent_vm: Mapping[str, Any],
    memory_mb: int,
    vcpus: int,
    timeout: float,
    *,
    output_keep_bytes: int = DEFAULT_KEEP,
) -> VMSpec:
    """Build a VMSpec from an agent's limits and its `vm:` block (and the engine's
    `output_keep_bytes` setting: bytes of each output stream's head and tail kept)."""
    return VMSpec(
        memory_mb=agent_vm.get("memory_mb") or memory_mb,
        vcpus=agent_vm.get("vcpus") or vcpus,
        timeout_seconds=timeout,
        network=bool(agent_vm.get("network")),
        allowed_ports=tuple(agent_vm.get("allowed_ports") or ()),
        image=agent_vm.get("image"),
        output_keep_bytes=output_keep_bytes,
    )
