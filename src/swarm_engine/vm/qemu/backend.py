"""The qemu `VMBackend`: boots microVMs (cold, or from the warm pool) and reaps orphans."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from swarm_engine.errors import ConfigError, VMError
from swarm_engine.models import first_error
from swarm_engine.vm.base import OrphanRecord, VMSpec
from swarm_engine.vm.proctree import pid_alive
from swarm_engine.vm.qemu.accel import AccelChoice, choose_accel
from swarm_engine.vm.qemu.config import QemuOptions
from swarm_engine.vm.qemu.image import Image, load_image
from swarm_engine.vm.qemu.machine import (
    MAX_SOCKET_PATH,
    MachineSpec,
    is_our_qemu,
    kill_group,
    listen_socket,
    log_tail,
    start_qemu,
)
from swarm_engine.vm.qemu.protocol import Channel
from swarm_engine.vm.qemu.snapshot import save_state
from swarm_engine.vm.qemu.vm import QemuVM
from swarm_engine.vm.qemu.warm import WarmPool

log = logging.getLogger(__name__)
T = TypeVar("T")
OWNER_FILE = "owner.pid"


class QemuBackend:
    name = "qemu"

    def __init__(self, home: Path, options: QemuOptions) -> None:
        self.options = options
        self.images_dir = options.images_dir or images_dir_for(home)
        self.run_dir = options.run_dir or home / "run" / "qemu"
        self.snapshot_dir = options.snapshot_dir or _writable_or(
            self.images_dir / ".snapshots", home / "run" / "qemu-snapshots"
        )
        self._snapshot_lock = asyncio.Lock()
        self._snapshot_failed: set[str] = set()
        self._accel: AccelChoice | None = None
        self._images: dict[str, Image] = {}
        self._warm: WarmPool | None = None
        if options.warm:
            spec = VMSpec(memory_mb=options.default_memory_mb, vcpus=options.default_vcpus)
            self._warm = WarmPool(
                options.warm, spec, options.image, lambda: self._boot_new(_new_id("warm"), spec)
            )

    # -- configuration -----------------------------------------------------------------
    async def accel(self) -> AccelChoice:
        if self._accel is None:
            wanted, binary = self.options.accel, self.options.qemu_binary
            self._accel = await asyncio.to_thread(choose_accel, wanted, binary)
            log.info("qemu accel: %s (%s)", self._accel.mode, self._accel.reason)
        return self._accel

    def image(self, name: str | None = None) -> Image:
        key = name or self.options.image
        if key not in self._images:
            self._images[key] = load_image(self.images_dir, key)
        return self._images[key]

    @property
    def warm_pool(self) -> WarmPool | None:
        return self._warm

    async def start(self) -> None:
        """Check the image and start filling the warm pool (else the first `boot` does)."""
        self.image()
        await self.accel()
        if self._warm is not None:
            self._warm.start()

    # -- VMBackend ---------------------------------------------------------------------
    async def boot(self, vm_id: str, spec: VMSpec) -> QemuVM:
        if self._warm is not None:
            self._warm.start()
            if self._warm.matches(spec, spec.image or self.options.image):
                vm = await self._warm.take()
                if vm is not None:
                    vm.id = vm_id
                    vm.spec = spec
                    return vm
        return await self._boot_new(vm_id, spec)

    def reap(self, record: OrphanRecord) -> None:
        if record.pid and is_our_qemu(record.pid, record.socket_path):
            kill_group(record.pid)
        if record.socket_path:
            with contextlib.suppress(OSError):
                os.unlink(record.socket_path)
        if record.overlay_path and self._owns(Path(record.overlay_path)):
            shutil.rmtree(record.overlay_path, ignore_errors=True)

    async def close(self) -> None:
        if self._warm is not None:
            await self._warm.close()

    # -- internals ---------------------------------------------------------------------
    def _owns(self, path: Path) -> bool:
        """Only delete folders this backend makes (in its run folder, or marked as ours)."""
        try:
            return path.resolve().parent == self.run_dir.resolve() or (path / OWNER_FILE).exists()
        except OSError:
            return False

    def sweep(self) -> int:
        """Delete VM folders whose owning engine process is gone (e.g. warm VMs of a crashed
        engine, which are not in the `vms` table). Returns how many were removed."""
        removed = 0
        if not self.run_dir.is_dir():
            return 0
        for folder in self.run_dir.iterdir():
            owner = _read_pid(folder / OWNER_FILE)
            if owner is not None and pid_alive(owner):
                continue
            if owner is None and _age(folder) < self.options.boot_timeout:
                continue  # another engine may be creating it right now
            qemu = _read_pid(folder / "qemu.pid")
            sock = (folder / "socket").read_text().strip() if (folder / "socket").exists() else None
            self.reap(OrphanRecord(folder.name, qemu, None, sock, str(folder)))
            removed += 1
        return removed

    def _socket_path(self, folder: Path) -> Path:
        path = folder / "agent.sock"
        if len(str(path)) <= MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha256(str(folder).encode()).hexdigest()[:20]
        short = Path(tempfile.gettempdir()) / f"swarm-qemu-{os.getuid()}"
        short.mkdir(mode=0o700, exist_ok=True)
        return short / f"{digest}.sock"

    async def _boot_new(self, vm_id: str, spec: VMSpec) -> QemuVM:
        """Boot from the template snapshot when possible, else boot the kernel."""
        state = await self.snapshot_for(spec) if self.options.snapshot else None
        if state is not None:
            try:
                return await self._launch(vm_id, spec, incoming=state)
            except VMError as exc:
                log.warning("restore from %s failed, booting cold: %s", state, exc)
                self._snapshot_failed.add(state.name)
                with contextlib.suppress(OSError):
                    state.unlink()
        return await self._launch(vm_id, spec)

    def _snapshot_path(self, spec: VMSpec, accel: AccelChoice) -> Path:
        image = self.image(spec.image)
        built = hashlib.sha256(str(image.manifest.get("built_at")).encode()).hexdigest()[:8]
        stamp = f"{image.manifest.get('recipe')}-{built}"
        return (
            self.snapshot_dir
            / image.name
            / f"{stamp}-{spec.memory_mb}m-{spec.vcpus}c-{accel.mode}.state"
        )

    async def snapshot_for(self, spec: VMSpec) -> Path | None:
        """The template state for `spec`, made now if missing; None if it cannot be used."""
        if spec.network:
            return None
        path = self._snapshot_path(spec, await self.accel())
        if path.name in self._snapshot_failed:
            return None
        async with self._snapshot_lock:
            if path.is_file():
                return path
            path.parent.mkdir(parents=True, exist_ok=True)
            template = await self._launch(_new_id("template"), spec, qmp=True)
            try:
                saved_ms = await save_state(template.folder / "qmp.sock", path)
                log.info("saved template VM state %s in %d ms", path, saved_ms)
                _prune_snapshots(path)
            except VMError as exc:
                log.warning("cannot save a template VM (%s); booting cold", exc)
                self._snapshot_failed.add(path.name)
                return None
            finally:
                await template.destroy()
        return path

    async def _launch(
        self, vm_id: str, spec: VMSpec, *, incoming: Path | None = None, qmp: bool = False
    ) -> QemuVM:
        image = self.image(spec.image)
        accel = await self.accel()
        folder = self.run_dir / vm_id
        try:
            folder.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise VMError(f"cannot create the run folder of {vm_id}: {exc}") from exc
        (folder / OWNER_FILE).write_text(f"{os.getpid()}\n")
        sock_path = self._socket_path(folder)
        (folder / "socket").write_text(f"{sock_path}\n")
        machine = MachineSpec(
            image=image,
            accel=accel,
            qemu_binary=self.options.qemu_binary,
            socket_path=sock_path,
            memory_mb=spec.memory_mb,
            vcpus=spec.vcpus,
            network=spec.network,
            allowed_ports=spec.allowed_ports,
            console_log=folder / "console.log" if self.options.console_log else None,
            qmp_socket=folder / "qmp.sock" if qmp else None,
            incoming=incoming,
        )
        started = time.monotonic()
        listener = listen_socket(sock_path)
        proc: asyncio.subprocess.Process | None = None
        try:
            proc = await start_qemu(machine, folder / "qemu.log")
            (folder / "qemu.pid").write_text(f"{proc.pid}\n")
            budget = self.options.boot_timeout
            loop = asyncio.get_running_loop()
            conn: socket.socket
            conn, _ = await _until(loop.sock_accept(listener), proc, budget, folder, "connecting")
            reader, writer = await asyncio.open_unix_connection(sock=conn)
            channel = Channel(reader, writer)
            left = budget - (time.monotonic() - started)
            if incoming is None:
                await _until(channel.handshake(left), proc, left, folder, "its agent was ready")
            else:
                channel.start()
                hello = channel.call({"t": "restored", "time": time.time()}, os.urandom(64))
                await _until(hello, proc, left, folder, "the restored agent answered")
        except BaseException as exc:
            if proc is not None:
                kill_group(proc.pid)
                await asyncio.shield(proc.wait())
            listener.close()
            with contextlib.suppress(OSError):
                sock_path.unlink()
            shutil.rmtree(folder, ignore_errors=True)
            if isinstance(exc, TimeoutError):
                raise VMError(
                    f"VM {vm_id} was not ready within {self.options.boot_timeout:.0f} s"
                ) from exc
            raise
        listener.close()
        with contextlib.suppress(OSError):
            sock_path.unlink()  # QEMU is connected; the path is only a name for `reap` now
        booted_ms = int((time.monotonic() - started) * 1000)
        log.debug("booted", extra={"vm_id": vm_id, "boot_ms": booted_ms})
        return QemuVM(
            vm_id,
            spec=spec,
            proc=proc,
            channel=channel,
            folder=folder,
            socket_path=sock_path,
            kill_grace=self.options.kill_grace,
            accel=accel.mode,
            booted_ms=booted_ms,
        )


async def _until(
    work: Awaitable[T], proc: asyncio.subprocess.Process, timeout: float, folder: Path, what: str
) -> T:
    """Await `work`, but fail at once if QEMU exits first (with its log in the error)."""
    task = asyncio.ensure_future(work)
    exited = asyncio.ensure_future(proc.wait())
    try:
        done, _ = await asyncio.wait(
            {task, exited}, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        exited.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if task in done:
        return task.result()
    if exited in done:
        detail = log_tail(folder / "qemu.log") or log_tail(folder / "console.log")
        raise VMError(f"QEMU exited ({proc.returncode}) before {what}: {detail}")
    raise TimeoutError(what)


def images_dir_for(home: Path) -> Path:
    """Images live in `<home>/images`, unless $SWARM_QEMU_IMAGES names a shared folder (CI
    builds or restores one image there for every test home)."""
    shared = os.environ.get("SWARM_QEMU_IMAGES")
    return Path(shared) if shared else home / "images"


def _writable_or(preferred: Path, fallback: Path) -> Path:
    try:
        preferred.mkdir(parents=True, exist_ok=True)
    except OSError:
        return fallback
    return preferred if os.access(preferred, os.W_OK) else fallback


def _prune_snapshots(keep: Path) -> None:
    """Delete states of older builds of the same image (other recipe or build stamp)."""
    stamp = "-".join(keep.name.split("-")[:2]) + "-"
    for other in keep.parent.glob("*.state"):
        if not other.name.startswith(stamp):
            with contextlib.suppress(OSError):
                other.unlink()


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def create(home: Path, options: dict[str, Any]) -> QemuBackend:
    try:
        config = QemuOptions(**options)
    except ValidationError as exc:
        raise ConfigError(f"qemu backend option {first_error(exc)}") from exc
    backend = QemuBackend(Path(home), config)
    backend.sweep()
    return backend
