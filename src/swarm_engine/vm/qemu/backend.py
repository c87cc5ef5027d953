"""The qemu `VMBackend`: boots microVMs (cold, or from the warm pool) and reaps orphans."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from swarm_engine.errors import ConfigError, VMError
from swarm_engine.models import IMAGE_RE, QEMU_MIN_MEMORY_MB, first_error
from swarm_engine.vm.base import OrphanRecord, VMSpec
from swarm_engine.vm.proctree import live_work, pid_alive, runs_swarm_engine
from swarm_engine.vm.qemu import mounts
from swarm_engine.vm.qemu import template as templates
from swarm_engine.vm.qemu.accel import AccelChoice, choose_accel
from swarm_engine.vm.qemu.config import QemuOptions
from swarm_engine.vm.qemu.connect import accept_one, close_listeners, until_ready
from swarm_engine.vm.qemu.console import ConsoleSink
from swarm_engine.vm.qemu.folders import (
    OWNER_FILE,
    SERVING_FILE,
    age,
    images_dir_for,
    is_vm_folder,
    owner_of,
    pid_namespace,
    read_pid,
    run_dir_of,
    serves,
    writable_or,
)
from swarm_engine.vm.qemu.forwards import kill_relays, relays_of, stop_strays
from swarm_engine.vm.qemu.hostfit import fit_problem
from swarm_engine.vm.qemu.image import Image, image_identity, load_image
from swarm_engine.vm.qemu.machine import (
    MAX_SOCKET_PATH,
    MachineSpec,
    is_our_qemu,
    kill_group,
    listen_socket,
    log_line,
    start_qemu,
)
from swarm_engine.vm.qemu.protocol import Channel
from swarm_engine.vm.qemu.snapshot import start_restore
from swarm_engine.vm.qemu.templating import BootTimedOut, TemplateMaker
from swarm_engine.vm.qemu.vm import QemuVM
from swarm_engine.vm.qemu.warm import WarmPool
from swarm_engine.vm.workspace import remove_folder

log = logging.getLogger(__name__)
T = TypeVar("T")


class QemuBackend:
    name = "qemu"

    def __init__(self, home: Path, options: QemuOptions) -> None:
        self.options = options
        self.images_dir = options.images_dir or images_dir_for(home)
        self.run_dir = run_dir_of(home, options)
        self._home = home
        self._mounts_dirs = (self.images_dir / ".mounts", home / "run" / "qemu-mounts")
        if options.mounts_dir is not None:
            self._mounts_dirs = (options.mounts_dir, options.mounts_dir)
        self.templates = TemplateMaker(self)
        self._accel: AccelChoice | None = None
        self._accel_lock = asyncio.Lock()  # (bound to a loop only once waited on)
        self._images: dict[str, tuple[Image, tuple[int, ...]]] = {}
        self._warm: WarmPool | None = None
        if options.warm:
            spec = VMSpec(memory_mb=options.default_memory_mb, vcpus=options.default_vcpus)
            self._warm = WarmPool(
                options.warm,
                spec,
                options.image,
                lambda: self._boot_warm(spec),
                lambda: self.build(options.image),
            )

    # -- configuration -----------------------------------------------------------------
    @functools.cached_property
    def snapshot_dir(self) -> Path:
        """Where template states live; made when first asked for (a sweep makes nothing)."""
        return self.options.snapshot_dir or writable_or(
            self.images_dir / ".snapshots", self._home / "run" / "qemu-snapshots"
        )

    async def accel(self) -> AccelChoice:
        """The accelerator of every VM this backend boots (`choose_accel`), chosen once:
        the first call probes KVM (a QEMU process, in a thread) and logs the choice in
        one line; calls made meanwhile wait for it under a lock (six steps starting at
        once started six probes and logged six lines). `VMError` as `choose_accel`
        raises it; a choice that failed is tried again by the next call."""
        if self._accel is not None:
            return self._accel
        async with self._accel_lock:
            if self._accel is None:
                options = self.options
                self._accel = await asyncio.to_thread(
                    choose_accel, options.accel, options.qemu_binary, options.tcg_tb_mb
                )
                log.info("qemu accel: %s (%s)", self._accel.mode, self._accel.reason)
            return self._accel

    def image(self, name: str | None = None) -> Image:
        """The image `name`, read again whenever its files changed on disk (a rebuild
        while this engine runs): a few `stat` calls per boot, so a restore never pairs
        a template of the old build with the new root filesystem."""
        return self._image(name)[0]

    def build(self, name: str | None = None) -> tuple[int, ...]:
        """Which build of image `name` a boot now uses: its files' identity (`image`)."""
        return self._image(name)[1]

    def _image(self, name: str | None) -> tuple[Image, tuple[int, ...]]:
        key = name or self.options.image
        cached = self._images.get(key)
        # Its files' identity before they are read (a change while they are read is seen
        # next time); a name that is no image name is refused by `load_image`.
        identity = image_identity(self.images_dir / key) if IMAGE_RE.fullmatch(key) else ()
        if cached is None or identity != cached[1]:
            if cached is not None:
                log.info("qemu image %s changed on disk; using the new build", key)
            image = load_image(self.images_dir, key)
            self._images[key] = cached = (image, identity)
        return cached

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
        self._check_spec(spec)
        if spec.mounts:  # extra drives: no template or warm VM has those devices
            return await self._boot_with_mounts(vm_id, spec)
        if self._warm is not None:
            self._warm.start()
            if self._warm.matches(spec, spec.image or self.options.image):
                vm = await self._warm.take()
                if vm is not None:
                    vm.id = vm_id
                    vm.spec = spec
                    with contextlib.suppress(OSError):  # (a few bytes, like owner.pid's)
                        (vm.folder / SERVING_FILE).write_text(f"{vm_id}\n")
                    return vm
        return await self._boot_new(vm_id, spec)

    @staticmethod
    def _check_spec(spec: VMSpec) -> None:
        """Refuse, in one line and before anything is made or started (a VM folder, a
        template, QEMU), a spec no VM of this host can have: too little memory to boot,
        or more memory or vCPUs than the host has (`hostfit`)."""
        if spec.memory_mb < QEMU_MIN_MEMORY_MB:  # (a row registered before the minimum)
            raise VMError(
                f"memory_mb {spec.memory_mb} is below {QEMU_MIN_MEMORY_MB}, "
                "the least a qemu VM boots with"
            )
        problem = fit_problem(spec)
        if problem is not None:
            raise VMError(problem)

    async def _boot_warm(self, spec: VMSpec) -> QemuVM:
        self._check_spec(spec)  # (the default spec: it may ask more than this host has)
        return await self._boot_new(_new_id("warm"), spec)

    def reap(self, record: OrphanRecord) -> None:
        """Kill and delete what is left of a VM whose engine is gone. Only its folder in
        this backend's run folder is looked at (a `vms` row is any writer's: its pid and
        socket path are not trusted): the QEMU process named in that folder, if it still
        runs for that folder's socket, the socket and the folder. Raises `VMError` when the
        folder belongs to a live engine (its `owner.pid`: another process, or this one when
        it runs swarm-engine; or the QEMU's ancestry, `live_work`), or cannot be removed
        (one line: what is left)."""
        folder = self._vm_folder(record.overlay_path)
        if folder is None:
            return  # nothing of this backend's is named: nothing is touched
        owner, elsewhere = owner_of(folder)
        if elsewhere:
            raise VMError(f"VM folder {folder} belongs to an engine of another pid namespace")
        mine = owner == os.getpid() and not runs_swarm_engine(owner)  # (a test's, in-process)
        if owner is not None and pid_alive(owner) and not mine:
            raise VMError(f"VM folder {folder} belongs to a running engine (pid {owner})")
        sock = self.socket_path(folder)
        qemu = read_pid(folder / "qemu.pid")
        if qemu is not None and is_our_qemu(qemu, str(sock)):
            why = live_work([qemu])  # the engine above it, whatever owner.pid says
            if why is not None:
                raise VMError(f"VM folder {folder} left as it is: {why}")
            kill_group(qemu)
        kill_relays(relays_of(folder))  # (in a session of their own: not in QEMU's group)
        with contextlib.suppress(OSError):
            sock.unlink()
        left = remove_folder(folder)
        if left is not None:
            raise VMError(left)

    def fence(self, record: OrphanRecord) -> int | None:
        """Kill the QEMU process of a VM whose engine may live (see `VMBackend.fence`): the
        one named in its folder, only while it runs for that folder's socket, and only when
        that folder is the row's own VM's (named after its id, or a warm VM's folder that
        says it serves that id: a row may name any folder); the folder and the socket stay
        for the owner."""
        folder = self._vm_folder(record.overlay_path)
        if folder is None or not serves(folder, record.id):
            return None  # nothing of this backend's is named, or another VM's folder is
        qemu = read_pid(folder / "qemu.pid")
        if (
            qemu is None
            or not pid_alive(qemu)
            or not is_our_qemu(qemu, str(self.socket_path(folder)))
        ):
            return 0
        kill_group(qemu)
        return 1

    async def close(self) -> None:
        if self._warm is not None:
            await self._warm.close()

    # -- internals ---------------------------------------------------------------------
    def _vm_folder(self, path: str | None) -> Path | None:
        """`path` if it is a VM folder of this backend: a folder right in its run folder
        (not a link) of the shape it makes (`is_vm_folder`), else None."""
        if not path:
            return None
        folder = Path(path)
        try:
            if not is_vm_folder(folder):
                return None
            return folder if folder.resolve().parent == self.run_dir.resolve() else None
        except OSError:
            return None

    def leftover_dirs(self) -> list[Path]:
        """The folders `sweep` looks in that exist (nothing is made): the run folder and
        the snapshot folders (`snapshot_dir`, else both places it may be)."""
        places = [self.run_dir, *self._snapshot_dirs()]
        return [p for p in places if p.is_dir()]

    def _snapshot_dirs(self) -> tuple[Path, ...]:
        if self.options.snapshot_dir is not None:
            return (self.options.snapshot_dir,)
        return (self.images_dir / ".snapshots", self._home / "run" / "qemu-snapshots")

    def sweep(self) -> list[str]:
        """Delete VM folders whose owning engine process is gone (e.g. warm VMs of a crashed
        engine, which are not in the `vms` table), unfinished template folders of engines
        that died saving one (`templates.sweep_unfinished`), and half-packed mount images
        of dead engines. Returns the names of the VM folders removed (a template folder's
        as `<image>/<name>`). Only folders of the shape this backend makes
        (`is_vm_folder`, `templates.TMP_NAME`) are looked at; a VM folder that cannot be
        removed is said in a warning line (every sweep, until it is gone) and not
        counted. Nothing is made (no snapshot folder either)."""
        removed: list[str] = []
        for cache in dict.fromkeys(self._mounts_dirs):  # squashfs files of dead packers
            mounts.sweep(cache)
        for snapshots in dict.fromkeys(self._snapshot_dirs()):
            removed += templates.sweep_unfinished(snapshots)
        if not self.run_dir.is_dir():
            return removed
        for folder in self.run_dir.iterdir():
            if not is_vm_folder(folder):
                continue  # not a folder this backend made: never touched
            owner, elsewhere = owner_of(folder)
            if elsewhere or (owner is not None and pid_alive(owner)):
                continue  # its owner lives, or is another pid namespace's: not ours to judge
            if owner is None and age(folder) < self.options.boot_timeout:
                continue  # another engine may be creating it right now
            qemu = read_pid(folder / "qemu.pid")
            sock = (folder / "socket").read_text().strip() if (folder / "socket").exists() else None
            try:
                self.reap(OrphanRecord(folder.name, qemu, None, sock, str(folder)))
            except VMError as exc:
                log.warning("%s", exc)
                continue
            if not folder.exists():  # (a folder that could not be removed is not counted)
                removed.append(folder.name)
        return removed

    def stop_stray_relays(self) -> list[int]:
        """Kill the relays of this backend's VMs that are gone (`forwards.stop_strays`)."""
        return stop_strays(self.run_dir, is_our_qemu)

    def socket_path(self, folder: Path, name: str = "agent") -> Path:
        path = folder / f"{name}.sock"
        if len(str(path)) <= MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha256(str(folder).encode()).hexdigest()[:20]
        short = Path(tempfile.gettempdir()) / f"swarm-qemu-{os.getuid()}"
        short.mkdir(mode=0o700, exist_ok=True)
        return short / (f"{digest}.sock" if name == "agent" else f"{digest}.{name}.sock")

    async def _boot_with_mounts(self, vm_id: str, spec: VMSpec) -> QemuVM:
        """A VM that shows host folders (`spec.mounts`), booted cold: each folder packed
        into a cached squashfs image on a read-only drive, mounted by the guest; or no VM
        (`VMError`) if any of that fails (vm/qemu/mounts.py)."""
        cache = writable_or(*self._mounts_dirs)
        keep = self.options.mounts_keep
        with contextlib.ExitStack() as holds:  # no engine prunes them until QEMU has them open
            drives = await asyncio.to_thread(mounts.pack_all, spec.mounts, cache, holds, keep=keep)
            vm = await self.launch(vm_id, spec, drives=drives)
        try:
            await mounts.mount(vm, drives)
        except BaseException:
            await vm.destroy()
            raise
        return vm

    async def _boot_new(self, vm_id: str, spec: VMSpec) -> QemuVM:
        """Boot from the template snapshot when possible, else boot the kernel."""
        template = await self.snapshot_for(spec) if self.options.snapshot else None
        if template is not None:
            try:
                vm = await self.launch(
                    vm_id, spec, incoming=template.state, ram=template.ram, start=template.mode
                )
            except VMError as exc:
                log.warning("restore from %s failed, booting cold: %s", template.folder, exc)
                if template.problem() is None:  # not deleted meanwhile by another engine
                    self.templates.fail(template.key)  # cold boots for a while
                    await asyncio.to_thread(templates.discard, template.folder)
            else:
                if template.key.startswith(f"{self._stamp(spec)}-"):
                    return vm
                # The image was rebuilt while this clone started (QEMU may have opened the
                # new files): never run an old build's template on them; start again.
                await vm.destroy()
                return await self._boot_new(vm_id, spec)
        return await self.launch(vm_id, spec)

    def _stamp(self, spec: VMSpec) -> str:
        return self.templates.stamp(spec)

    async def snapshot_for(self, spec: VMSpec) -> templates.Template | None:
        """The template for `spec`, made now if missing; None if it cannot be used
        (`TemplateMaker.snapshot_for`)."""
        return await self.templates.snapshot_for(spec)

    async def launch(
        self,
        vm_id: str,
        spec: VMSpec,
        *,
        incoming: Path | None = None,
        qmp: bool = False,
        ram: Path | None = None,
        ram_shared: bool = False,
        drives: tuple[mounts.Disk, ...] = (),
        start: str = "boot",
    ) -> QemuVM:
        image = self.image(spec.image)
        accel = await self.accel()
        folder = self.run_dir / vm_id
        try:
            folder.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise VMError(f"cannot create the run folder of {vm_id}: {exc}") from exc
        (folder / OWNER_FILE).write_text(f"{os.getpid()} {pid_namespace()}\n")
        sock_path = self.socket_path(folder)
        (folder / "socket").write_text(f"{sock_path}\n")
        # A clone of a mapped template waits (`-incoming defer`) for the host to switch on
        # `x-ignore-shared` through QMP, which QEMU connects to us like the agent's port.
        deferred = incoming is not None and ram is not None
        qmp_path = self.socket_path(folder, "qmp") if deferred else None
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
            qmp_socket=self.socket_path(folder, "qmp") if qmp else None,
            incoming=None if deferred else incoming,
            incoming_qmp=qmp_path,
            ram_file=ram,
            ram_shared=ram_shared,
            drives=drives,
            tcg_cpu=mounts.TCG_CPU if drives else None,
            folder=folder,
        )
        started = time.monotonic()
        listener = listen_socket(sock_path)
        qmp_listener = listen_socket(qmp_path) if qmp_path is not None else None
        proc: asyncio.subprocess.Process | None = None
        console: ConsoleSink | None = None
        writer: asyncio.StreamWriter | None = None
        conn: socket.socket | None = None
        qmp_conn: socket.socket | None = None
        try:
            proc = await start_qemu(machine, folder / "qemu.log")
            if proc.stdout is not None and machine.console_log is not None:
                console = ConsoleSink(proc.stdout, machine.console_log)
            (folder / "qemu.pid").write_text(f"{proc.pid}\n")
            budget = self.options.boot_timeout
            if qmp_listener is not None and incoming is not None:
                qmp_conn = await until_ready(
                    accept_one(qmp_listener), proc, budget, folder, "QMP", console
                )
                restore = start_restore(qmp_conn, incoming)
                await until_ready(restore, proc, budget, folder, "the restore started", console)
            conn = await until_ready(
                accept_one(listener), proc, budget, folder, "connecting", console
            )
            reader, writer = await asyncio.open_unix_connection(sock=conn)
            channel = Channel(reader, writer)
            left = budget - (time.monotonic() - started)
            if incoming is None:
                await until_ready(
                    channel.handshake(left), proc, left, folder, "its agent was ready", console
                )
            else:
                channel.start()
                hello = channel.call({"t": "restored", "time": time.time()}, os.urandom(64))
                await until_ready(hello, proc, left, folder, "the restored agent answered", console)
        except BaseException as exc:
            if writer is not None:
                writer.close()
            elif conn is not None:  # accepted, but no stream made of it yet
                conn.close()
            if qmp_conn is not None:  # (the restore's wait is over: nothing else holds it)
                qmp_conn.close()
            if proc is not None:
                kill_group(proc.pid)
                await asyncio.shield(proc.wait())
                kill_relays(await asyncio.to_thread(relays_of, folder))
            if console is not None:
                console.close()
            close_listeners(listener, qmp_listener)
            tail = log_line(folder / "console.log") if isinstance(exc, TimeoutError) else ""
            shutil.rmtree(folder, ignore_errors=True)
            if isinstance(exc, TimeoutError):
                said = f"; its console ends: {tail}" if tail else "; its console is empty"
                raise BootTimedOut(
                    f"VM {vm_id} was not ready within {self.options.boot_timeout:.0f} s{said}"
                ) from exc
            raise
        close_listeners(listener, qmp_listener)  # QEMU is connected; the paths are names only
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
            start=start,
            console=console,
        )


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create(home: Path, options: dict[str, Any]) -> QemuBackend:
    backend = QemuBackend(Path(home), _options(options))
    backend.sweep()
    backend.stop_stray_relays()
    return backend


def sweep_leftovers(home: Path, options: dict[str, Any]) -> list[str]:
    """What `create` sweeps (`QemuBackend.sweep`), for an engine's start and `cleanup`:
    the VM folders whose owner process is gone, a warm pool's included (no `vms` row
    names those), of the shape this backend makes (`is_vm_folder`: nothing else in a
    shared or odd `run_dir` is touched), and the unfinished template folders of engines
    that died saving one; the names of the folders removed. Nothing is made (no snapshot
    folder either), and nothing is looked at when neither the run folder nor a snapshot
    folder exists. Raises `ConfigError` for options that are not valid."""
    backend = QemuBackend(Path(home), _options(options))
    if not backend.leftover_dirs():
        return []
    return backend.sweep()


def stop_leftover_relays(home: Path, options: dict[str, Any]) -> list[int]:
    """For `cleanup`: the relays that VMs now gone left running (`stop_stray_relays`),
    killed; their pids."""
    config = _options(options)
    run_dir = run_dir_of(Path(home), config)
    if not run_dir.is_dir():
        return []
    return QemuBackend(Path(home), config).stop_stray_relays()


def _options(options: dict[str, Any]) -> QemuOptions:
    try:
        return QemuOptions(**options)
    except ValidationError as exc:
        raise ConfigError(f"qemu backend option {first_error(exc)}") from exc
