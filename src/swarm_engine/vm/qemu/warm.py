"""A warm pool: N booted guests waiting, so `boot` hands one out in milliseconds.

Every warm VM is still used by exactly one step and then destroyed; a background task
boots replacements one at a time (booting several at once only slows each down on a
small host). Only requests for the pool's spec (memory, vcpus, image, no network) are
served from it; anything else boots cold. Each warm VM keeps the build of the image it
was booted from (`build`, asked before its boot starts); one of an older build than the
image on disk now is destroyed when it would be handed out, never handed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable

from swarm_engine.errors import VMError
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.qemu.vm import QemuVM

log = logging.getLogger(__name__)

FIRST_BACKOFF = 1.0
"""Seconds before the first retry of a failed warm boot; doubled each time."""
MAX_BACKOFF = 30.0


class WarmPool:
    def __init__(
        self,
        size: int,
        spec: VMSpec,
        image: str,
        boot: Callable[[], Awaitable[QemuVM]],
        build: Callable[[], Hashable],
    ) -> None:
        self.size = size
        self.spec = spec
        self.image = image
        self._boot = boot
        self._build = build
        """Which build of the image a boot now uses (raises `VMError` like a boot)."""
        self._ready: list[QemuVM] = []
        self._builds: dict[str, Hashable] = {}
        """The build each ready VM (by id) was booted from."""
        self._wanted = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.failures = 0

    def matches(self, spec: VMSpec, image: str) -> bool:
        return (
            spec.memory_mb == self.spec.memory_mb
            and spec.vcpus == self.spec.vcpus
            and image == self.image
            and not spec.network
        )

    def start(self) -> None:
        if self._task is None and not self._closed and self.size > 0:
            self._wanted.set()
            self._task = asyncio.create_task(self._refill(), name="qemu-warm-pool")

    @property
    def ready_count(self) -> int:
        return len(self._ready)

    async def wait_ready(self, count: int | None = None, timeout: float | None = None) -> None:
        """Wait until `count` (default: all) warm VMs are ready; for tests and benchmarks."""
        want = self.size if count is None else count

        async def _wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self._ready) >= want or self._closed)

        await asyncio.wait_for(_wait(), timeout)

    async def take(self) -> QemuVM | None:
        """A ready VM of the image's current build, or None; older builds' are destroyed."""
        now = self._build() if self._ready else None
        while self._ready:
            vm = self._ready.pop(0)
            built = self._builds.pop(vm.id, None)
            self._wanted.set()
            if built != now:
                log.info("warm VM %s was booted from an older build of the image: destroyed", vm.id)
            elif await vm.is_alive():
                return vm
            await vm.destroy()
        self._wanted.set()
        return None

    async def _refill(self) -> None:
        backoff = FIRST_BACKOFF
        said = ""  # the last failure's line logged
        while not self._closed:
            await self._wanted.wait()
            self._wanted.clear()
            while not self._closed and len(self._ready) < self.size:
                try:
                    built = self._build()  # (before the boot: a change meanwhile is newer)
                    vm = await self._boot()
                except VMError as exc:
                    self.failures += 1
                    if str(exc) != said:  # (a refusal that stays, its spec too big for
                        said = str(exc)  # the host, is said once, not every 30 s)
                        log.warning("warm VM failed to boot: %s", exc)
                    else:
                        log.debug("warm VM failed to boot again: %s", exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wait_closed(), backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                backoff = FIRST_BACKOFF
                if self._closed:
                    await vm.destroy()
                    return
                self._builds[vm.id] = built
                self._ready.append(vm)
                async with self._changed:
                    self._changed.notify_all()

    async def _wait_closed(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._closed)

    async def close(self) -> None:
        self._closed = True
        async with self._changed:
            self._changed.notify_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        ready, self._ready = self._ready, []
        self._builds.clear()
        for vm in ready:
            await vm.destroy()
