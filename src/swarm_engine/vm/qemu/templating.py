"""A qemu backend's snapshot templates: each (image build, memory, vCPUs, accelerator,
kind) key's template is found, or made once under a lock every engine sharing the
snapshot folder takes, and restored by every clone (docs/qemu.md, "Snapshots"). A key
whose template failed (made, or restored from) is left for `TEMPLATE_RETRY_AFTER`, its
VMs booting cold meanwhile; a template VM that hangs at boot fails its step after one
`boot_timeout` (`BootTimedOut`). A step waits for others' template boots (the same key's,
in this engine or another; one `TEMPLATE_BOOTS` slot for any key) at most its
`boot_timeout` in all, then boots cold (`WaitedOut`)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from pathlib import Path
from typing import Protocol

from swarm_engine.errors import VMError
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.qemu import template as templates
from swarm_engine.vm.qemu.accel import AccelChoice
from swarm_engine.vm.qemu.config import QemuOptions
from swarm_engine.vm.qemu.image import Image, image_identity
from swarm_engine.vm.qemu.snapshot import WARM_UP, WARM_UP_TIMEOUT, save_state
from swarm_engine.vm.qemu.vm import QemuVM
from swarm_engine.vm.settled import settled

log = logging.getLogger(__name__)

TEMPLATE_RETRY_AFTER = 300.0
"""Seconds a template key that failed (made, or restored from) is not tried again by this
engine, its VMs booting cold meanwhile: a failure may pass (a boot timeout on a loaded
host, a full disk), so it is not for the engine's lifetime."""


TEMPLATE_BOOTS = 1
"""Template VMs one engine boots at once, whatever their keys: each writes a RAM file up
to its guest's memory and is followed by a save, which side by side would crowd a small
host. Steps of other keys wait for this slot at most their `boot_timeout` (`WaitedOut`)."""


class BootTimedOut(VMError):
    """A VM was not ready within `boot_timeout`: its guest may hang at boot."""


class WaitedOut(Exception):
    """A step waited its `boot_timeout` for others' template boots (a key's lock, in this
    engine or another, or the `TEMPLATE_BOOTS` slot): it boots cold this time, and the
    key is not marked failed (the template being made is used by later steps)."""


class Launcher(Protocol):
    """What a `TemplateMaker` needs of its backend (`backend.QemuBackend`)."""

    options: QemuOptions

    @property
    def snapshot_dir(self) -> Path: ...

    async def accel(self) -> AccelChoice: ...

    def image(self, name: str | None = None) -> Image: ...

    def socket_path(self, folder: Path, name: str = "agent") -> Path: ...

    async def launch(
        self, vm_id: str, spec: VMSpec, *, qmp: bool = False, ram: Path | None = None,
        ram_shared: bool = False,
    ) -> QemuVM: ...  # fmt: skip


class TemplateMaker:
    """The templates of one backend (`backend.launch` boots their VMs)."""

    def __init__(self, backend: Launcher) -> None:
        self.backend = backend
        self._locks: dict[str, asyncio.Lock] = {}
        """One lock per template key: a step waits only for its own key's making here."""
        self._boots = asyncio.Semaphore(TEMPLATE_BOOTS)
        self._failed_at: dict[str, float] = {}
        """Template keys that failed, and when (`time.monotonic`): see `failed`."""
        self._made: dict[str, templates.Template] = {}
        self._unmappable: set[Path] = set()

    def key(self, spec: VMSpec, accel: AccelChoice, mode: templates.Mode) -> str:
        return templates.key_for(self.stamp(spec), spec.memory_mb, spec.vcpus, accel.mode, mode)

    def stamp(self, spec: VMSpec) -> str:
        """Which build of the image a template was made from: its recipe, build time and
        the size and mtime of its kernel, initramfs and root filesystem (a root filesystem
        replaced without a new manifest is another build too)."""
        image = self.backend.image(spec.image)
        build = hashlib.sha256(str(image.manifest.get("built_at")).encode())
        build.update(repr(image_identity(image.path, inodes=False)).encode())
        return f"{image.manifest.get('recipe')}-{build.hexdigest()[:8]}"

    async def snapshot_for(self, spec: VMSpec) -> templates.Template | None:
        """The template for `spec`, made now if missing; None if it cannot be used (then
        the step boots cold).

        Mapped mode (the default) falls back to a copy template only if the snapshot
        folder cannot hold a mapped RAM file, and says so in the log: a copy template is
        as isolated (each clone gets RAM of its own), only slower and larger.

        Waits for other steps' template boots (the key's lock in this engine, its file
        lock shared by every engine, the `TEMPLATE_BOOTS` slot) take at most
        `boot_timeout` seconds from this call in all: past that it returns None, logged
        (`WaitedOut`), without marking the key failed. Raises `BootTimedOut` when its own
        template VM hangs at boot."""
        if spec.network:
            return None
        accel = await self.backend.accel()
        parent = self.backend.snapshot_dir / self.backend.image(spec.image).name
        waited_from = asyncio.get_running_loop().time()
        deadline = waited_from + self.backend.options.boot_timeout
        try:
            return await self._find_or_make(spec, accel, parent, deadline)
        except WaitedOut as exc:
            waited = asyncio.get_running_loop().time() - waited_from
            log.warning("waited %.1f s for %s (boot_timeout); booting cold", waited, exc)
            return None

    async def _find_or_make(
        self, spec: VMSpec, accel: AccelChoice, parent: Path, deadline: float
    ) -> templates.Template | None:
        modes: list[templates.Mode] = ["copy"]
        if self.backend.options.snapshot_memory == "mapped" and parent not in self._unmappable:
            modes.insert(0, "mapped")
        for mode in modes:
            key = self.key(spec, accel, mode)
            if self.failed(key):
                continue
            lock = self._locks.setdefault(key, asyncio.Lock())
            await _acquire(lock, deadline, f"template {key} being made in this engine")
            try:
                if self.failed(key):  # (its making failed while this step waited)
                    continue
                found = self._made.get(key)
                if found is None or found.problem() is not None:
                    found = await asyncio.to_thread(templates.find, parent, key)
                if found is not None:
                    problem = found.problem()
                    if problem is None:
                        self._made[key] = found
                        return found
                    log.error("dropping template %s: %s", found.folder, problem)
                    await asyncio.to_thread(templates.discard, found.folder)
                made = await self._make_once(spec, parent, key, mode, deadline)
            finally:
                lock.release()
            if made is not None:
                self._made[key] = made
                return made
            if mode == "mapped":
                log.warning(
                    "no mapped template in %s; trying a copy template (as isolated: "
                    "each clone reads guest RAM into memory of its own; slower, larger)",
                    parent,
                )
        return None

    async def _make_once(
        self, spec: VMSpec, parent: Path, key: str, mode: templates.Mode, deadline: float
    ) -> templates.Template | None:
        """Make `key`'s template under the lock every engine sharing `parent` takes, or
        use the one another engine made while this one waited; in this engine's one
        template boot slot (`TEMPLATE_BOOTS`). `WaitedOut` when the lock or the slot is
        not had by `deadline` (the event loop's clock)."""
        try:
            async with contextlib.AsyncExitStack() as held:
                try:
                    await held.enter_async_context(templates.locked(parent, key, deadline))
                except TimeoutError:
                    raise WaitedOut(f"template {key} being made by another engine") from None
                found = await asyncio.to_thread(templates.find, parent, key)
                if found is not None and found.problem() is None:
                    return found
                await _acquire(self._boots, deadline, "this engine's template boot slot")
                try:
                    return await self._make(spec, parent, key, mode)
                finally:
                    self._boots.release()
        except OSError as exc:
            log.warning("cannot save templates in %s (%s); booting cold", parent, exc)
            self.fail(key)
            return None

    def failed(self, key: str) -> bool:
        """Whether template `key` failed less than `TEMPLATE_RETRY_AFTER` seconds ago."""
        at = self._failed_at.get(key)
        if at is None:
            return False
        if time.monotonic() - at < TEMPLATE_RETRY_AFTER:
            return True
        del self._failed_at[key]
        log.info("trying template %s again (it failed %.0f s ago)", key, time.monotonic() - at)
        return False

    def fail(self, *keys: str) -> None:
        for key in keys:
            self._failed_at[key] = time.monotonic()

    async def _make(
        self, spec: VMSpec, parent: Path, key: str, mode: templates.Mode
    ) -> templates.Template | None:
        """Boot a template VM and save it; None (logged) if that fails. Its temporary
        folder is deleted on every end but its publishing (a failure, a cancel: a step's
        timeout, an engine's abort), off the event loop and to the end whatever cancel
        comes meanwhile (`vm/settled.py`); file work in it never outlives a cancel."""
        full = await asyncio.to_thread(templates.space_problem, parent, spec.memory_mb)
        if full is not None:
            log.warning("cannot save a %s template: %s; booting cold", mode, full)
            self.fail(key)
            return None
        tmp = templates.tmp_folder(parent, key)
        try:
            return await self._save(spec, parent, key, mode, tmp)
        finally:  # once published the folder has another name: nothing is left to delete
            await settled(templates.discard, tmp, drop=False)

    async def _save(
        self, spec: VMSpec, parent: Path, key: str, mode: templates.Mode, tmp: Path
    ) -> templates.Template | None:
        """`_make`'s work in `tmp` (made here, published at the end when all went
        well; the caller deletes it otherwise)."""
        try:
            await settled(tmp.mkdir)
        except OSError as exc:
            log.warning("cannot save templates in %s (%s); booting cold", parent, exc)
            self.fail(key)
            return None
        ram = tmp / "ram" if mode == "mapped" else None
        refused = await settled(templates.unmappable, tmp) if ram else None
        if refused is not None:
            log.warning("guest RAM cannot be mapped from a file in %s: %s", parent, refused)
            self._unmappable.add(parent)
            return None
        try:
            template = await self.backend.launch(
                f"template-{uuid.uuid4().hex[:12]}", spec, qmp=True, ram=ram, ram_shared=True
            )
            try:
                warmed = await template.exec(WARM_UP, timeout=WARM_UP_TIMEOUT)
                if warmed.exit_code != 0:
                    raise VMError(f"the template VM's first command `{WARM_UP}` failed")
                saved_ms = await save_state(
                    self.backend.socket_path(template.folder, "qmp"),
                    tmp / "state",
                    mapped=mode == "mapped",
                )
            finally:
                await template.destroy()
            built_at = self._built_at(spec)
            made = await settled(templates.publish, tmp, key, mode, built_at)
        except BootTimedOut as exc:
            # A guest that hangs at boot hangs as a copy template and booted cold too: the
            # step fails now (one boot_timeout, not three) and both kinds of template wait
            # `TEMPLATE_RETRY_AFTER` (a timeout may be the host's load; later steps boot cold).
            accel = await self.backend.accel()
            self.fail(*(self.key(spec, accel, kind) for kind in ("mapped", "copy")))
            raise BootTimedOut(
                f"the template {exc}; not tried again as a copy template or a cold boot in "
                "this step (a guest that hangs at boot would hang there too)"
            ) from exc
        except (VMError, OSError) as exc:
            full = await asyncio.to_thread(templates.space_problem, parent, spec.memory_mb)
            why = f"{exc}; {full}" if full else str(exc)
            log.warning("cannot save a %s template VM: %s", mode, why)
            self.fail(key)
            return None
        log.info("saved template %s (%s) in %d ms", made.folder, mode, saved_ms)
        await asyncio.to_thread(templates.prune, parent, self.stamp(spec), built_at)
        return made

    def _built_at(self, spec: VMSpec) -> str:
        return str(self.backend.image(spec.image).manifest.get("built_at") or "")


async def _acquire(lock: asyncio.Lock | asyncio.Semaphore, deadline: float, what: str) -> None:
    """Take `lock` by `deadline` (the event loop's clock), else raise `WaitedOut(what)`."""
    try:
        async with asyncio.timeout_at(deadline):
            await lock.acquire()
    except TimeoutError:
        raise WaitedOut(what) from None
