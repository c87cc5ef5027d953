"""What only the qemu backend does: cold boot, snapshot clones, warm pool, reaping, a
crashed engine, limits and the restricted network. Skipped without QEMU or an image."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from swarm_engine.config import load_settings
from swarm_engine.errors import VMError
from swarm_engine.vm.base import ExecResult, OrphanRecord, VMSpec
from swarm_engine.vm.qemu import machine
from swarm_engine.vm.qemu import template as templates
from swarm_engine.vm.qemu.backend import (
    QemuBackend,
    create,
    stop_leftover_relays,
)
from swarm_engine.vm.qemu.config import default_image
from swarm_engine.vm.qemu.doctor import unavailable
from swarm_engine.vm.qemu.folders import images_dir_for
from swarm_engine.vm.qemu.forwards import MAX_FORWARDED_CONNECTIONS, relay_command
from swarm_engine.vm.qemu.image import load_image


def qemu_images_dir() -> Path:
    return images_dir_for(load_settings().home)


pytestmark = [pytest.mark.qemu]


@pytest.fixture(autouse=True)
def _needs_qemu() -> None:
    reason = unavailable(qemu_images_dir())
    if reason is not None:
        pytest.skip(reason)


HOSTILE_STEP = """
import ctypes, os, time
agent = next(p for p in os.listdir("/proc") if p.isdigit()
             and open(f"/proc/{p}/comm").read().strip() == "swarm-agent")
port = next(int(n) for n in os.listdir(f"/proc/{agent}/fd")
            if os.readlink(f"/proc/{agent}/fd/{n}").startswith("/dev/vport"))
pidfd = os.pidfd_open(int(agent))
fd = ctypes.CDLL(None, use_errno=True).syscall(438, pidfd, port, 0)  # pidfd_getfd
assert fd >= 0, os.strerror(ctypes.get_errno())
os.write(fd, b"\\xff\\xff\\xff\\xff\\0\\0\\0\\0")
time.sleep(30)  # sleep-ok: the hostile process stays up until the host ends the guest
"""


def _vm_id() -> str:
    return f"vm-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[QemuBackend]:
    made = create(tmp_path / "home", {"images_dir": str(qemu_images_dir())})
    try:
        yield made
    finally:
        await made.close()


async def wait_exit(pid: int, timeout: float = 30) -> None:
    """Wait (event-driven, through a pidfd) until process `pid` has ended."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()
    loop.add_reader(fd, gone.set)
    try:
        await asyncio.wait_for(gone.wait(), timeout)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def is_running(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_cold_boot_without_snapshot(tmp_path: Path) -> None:
    backend = create(tmp_path / "home", {"images_dir": str(qemu_images_dir()), "snapshot": False})
    try:
        vm = await backend.boot(_vm_id(), VMSpec())
        info = vm.info()
        assert info.pid and is_running(info.pid)
        assert info.extra["accel"] in ("tcg", "kvm")
        assert info.socket_path and info.overlay_path
        res = await vm.exec(["python3", "-c", "import sys; print(sys.version_info[0])"])
        assert res.stdout == b"3\n"
        assert (await vm.exec("cat /proc/cmdline")).stdout.count(b"tsc_early_khz=") == 1
        assert (await vm.exec("ls /sys/class/net")).stdout.split() == [b"lo"]  # no network
        await vm.destroy()
        assert not Path(info.overlay_path).exists()
        assert not is_running(info.pid)
    finally:
        await backend.close()


async def test_snapshot_clones_get_their_own_randomness_and_clock(backend: QemuBackend) -> None:
    script = "head -c 16 /dev/urandom | od -An -tx1; date +%s"
    outputs = []
    for _ in range(2):
        vm = await backend.boot(_vm_id(), VMSpec())
        try:
            outputs.append((await vm.exec(script)).stdout.split(b"\n"))
        finally:
            await vm.destroy()
    assert outputs[0][0] != outputs[1][0]
    host_now = int(subprocess.check_output(["date", "+%s"]))
    for out in outputs:
        assert abs(int(out[1]) - host_now) < 60


async def test_standard_input_past_one_frame_is_refused_at_once(backend: QemuBackend) -> None:
    """A command's standard input goes to the guest in one frame: past `put_file`'s
    bound (64 MiB) it is refused before anything is sent (the guest had dropped the
    frame and the command waited out its timeout), and the VM runs on."""
    vm = await backend.boot(_vm_id(), VMSpec(timeout_seconds=30))
    try:
        with pytest.raises(VMError, match="standard input of 67108865 bytes: the qemu"):
            await vm.exec(["cat"], stdin=b"a" * (64 * 1024 * 1024 + 1))
        res = await vm.exec(["wc", "-c"], stdin=b"a" * (1024 * 1024))
        assert res.exit_code == 0 and res.stdout.strip() == b"1048576"
    finally:
        await vm.destroy()


async def test_warm_pool_hands_out_booted_vms_once(tmp_path: Path) -> None:
    options = {"images_dir": str(qemu_images_dir()), "warm": 1}
    backend = create(tmp_path / "home", options)
    try:
        await backend.start()
        pool = backend.warm_pool
        assert pool is not None
        await pool.wait_ready(timeout=60)
        vm = await backend.boot("vm-step-1", VMSpec())
        assert vm.id == "vm-step-1"
        assert vm.folder.name.startswith("warm-")  # it came from the pool
        assert (await vm.exec("echo warm")).stdout == b"warm\n"
        # A request the pool cannot serve (other memory) boots cold instead.
        other = VMSpec(memory_mb=384)
        assert not pool.matches(other, "cloud")
        await vm.destroy()
        await pool.wait_ready(timeout=60)  # refilled in the background
        pids = [v.pid for v in pool._ready]
    finally:
        await backend.close()
    assert pids and not any(is_running(p) for p in pids)


async def test_reap_kills_qemu_and_deletes_its_files(backend: QemuBackend) -> None:
    vm = await backend.boot(_vm_id(), VMSpec())
    info = vm.info()
    assert info.pid is not None
    backend.reap(OrphanRecord(vm.id, info.pid, info.workspace, info.socket_path, info.overlay_path))
    await wait_exit(info.pid)
    assert not is_running(info.pid)
    assert info.overlay_path and not Path(info.overlay_path).exists()
    # The VM learns of the kill from its channel's EOF, which can trail the exit a little
    # (a fast-booting guest made this race show up).
    await asyncio.wait_for(vm._channel.closed.wait(), timeout=10)
    assert not await vm.is_alive()
    await vm.destroy()  # still idempotent after a reap


async def test_killed_engine_leaves_no_qemu(tmp_path: Path) -> None:
    """An engine killed with SIGKILL takes its QEMU processes with it (PDEATHSIG); the next
    backend start sweeps what is left on disk."""
    home = tmp_path / "home"
    doomed = _vm_id()  # the shape of the backend's own VM folders: only those are swept
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from swarm_engine.vm.base import VMSpec\n"
        "from swarm_engine.vm.qemu.backend import create\n"
        "async def main():\n"
        f"    b = create(Path({str(home)!r}), {{'images_dir': {str(qemu_images_dir())!r}}})\n"
        f"    vm = await b.boot({doomed!r}, VMSpec())\n"
        "    print(vm.pid, flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    engine = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    assert engine.stdout is not None
    line = await asyncio.wait_for(engine.stdout.readline(), 120)
    qemu_pid = int(line)
    assert is_running(qemu_pid)
    engine.kill()
    await engine.wait()
    await wait_exit(qemu_pid)
    assert not is_running(qemu_pid)
    leftover = home / "run" / "qemu" / doomed
    assert leftover.exists()
    fresh = create(home, {"images_dir": str(qemu_images_dir())})
    await fresh.close()
    assert not leftover.exists()


async def test_limits_and_restricted_network(backend: QemuBackend) -> None:
    served = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello from the host\n")
        await writer.drain()
        writer.close()
        served.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    blocked = await asyncio.start_server(handle, "127.0.0.1", 0)
    blocked_port = blocked.sockets[0].getsockname()[1]
    spec = VMSpec(memory_mb=256, vcpus=2, network=True, allowed_ports=(port,))
    async with server, blocked:
        vm = await backend.boot(_vm_id(), spec)
        try:
            assert (await vm.exec("nproc")).stdout == b"2\n"
            mem_kb = int((await vm.exec("awk '/MemTotal/ {print $2}' /proc/meminfo")).stdout)
            assert 150_000 < mem_kb <= 256 * 1024
            client = (
                "import socket, sys\n"
                "def get(host, port):\n"
                "    try:\n"
                "        s = socket.create_connection((host, port), timeout=5)\n"
                "        return s.recv(100).decode().strip()\n"
                "    except OSError as exc:\n"
                "        return 'refused'\n"
                f"print(get('10.0.2.100', {port}))\n"
                f"print(get('10.0.2.100', {port}))\n"  # a second connection works too
                f"print(get('10.0.2.2', {blocked_port}))\n"
                f"print(get('10.0.2.100', {blocked_port}))\n"
            )
            res = await vm.exec(["python3", "-c", client], timeout=60)
            assert res.stdout.decode().splitlines() == [
                "hello from the host",
                "hello from the host",
                "refused",
                "refused",
            ]
            assert served.is_set()
        finally:
            await vm.destroy()


async def test_concurrent_execs_each_have_their_own_cgroup(backend: QemuBackend) -> None:
    vm = await backend.boot(_vm_id(), VMSpec(max_processes=20))
    try:
        # a long command keeps its cgroup; a short one with a leftover job, started next to
        # it, gets another one, and its leftover dies with it without touching the first
        long = asyncio.create_task(vm.exec("cat /proc/self/cgroup; sleep 3; echo done"))
        short = await vm.exec("sleep 60 & cat /proc/self/cgroup /sys/fs/cgroup$(cut -d: -f3 "
                              "/proc/self/cgroup)/pids.max")  # fmt: skip
        first = await long
        assert first.stdout.endswith(b"done\n") and short.ok, (first, short)
        groups = {first.stdout.split()[0], short.stdout.split()[0]}
        assert len(groups) == 2 and short.stdout.split()[1] == b"20", (first, short)
        left = await vm.exec("/opt/swarm/busybox ps -o args | grep -c '^sleep 60' || true")
        assert left.stdout == b"0\n"
        # and they are reused: one at a time, the commands land in the same cgroup
        again = {(await vm.exec("cat /proc/self/cgroup")).stdout for _ in range(3)}
        assert len(again) == 1
    finally:
        await vm.destroy()


async def test_a_guest_that_breaks_the_protocol_is_ended(backend: QemuBackend) -> None:
    """A step (root in its guest) takes a copy of the agent's port fd (pidfd_getfd) and
    writes a frame header claiming 4 GiB: the host ends that VM with a clear error; another
    VM of the same backend goes on. (Killing the agent instead would power the guest off.)"""
    script = HOSTILE_STEP
    hostile = await backend.boot(_vm_id(), VMSpec())
    other = await backend.boot(_vm_id(), VMSpec())
    try:
        with pytest.raises(VMError, match="broke the protocol: frame header of 4294967295"):
            await hostile.exec(["python3", "-c", script], timeout=60)
        await wait_exit(hostile.pid)
        assert not await hostile.is_alive()
        assert (await other.exec("echo fine")).stdout == b"fine\n"
    finally:
        await hostile.destroy()
        await other.destroy()
    assert not hostile.folder.exists()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def test_clones_of_a_mapped_template_are_private(tmp_path: Path) -> None:
    """Clones restored from one template (its guest RAM a file every clone maps
    copy-on-write) run commands, do not see each other's writes, and never write the
    template's RAM file."""
    options = {"images_dir": str(qemu_images_dir()), "snapshot_dir": str(tmp_path / "snap")}
    backend = create(tmp_path / "home", options)
    try:
        template = await backend.snapshot_for(VMSpec())
        assert template is not None and template.mode == "mapped" and template.ram is not None
        assert template.state.stat().st_size < 4 << 20  # device state only, not guest RAM
        before = _sha256(template.ram)
        a = await backend.boot(_vm_id(), VMSpec())
        b = await backend.boot(_vm_id(), VMSpec())
        try:
            assert a.info().extra["start"] == b.info().extra["start"] == "mapped"
            # A writes a file (its /workspace is tmpfs: guest RAM) and 64 MiB of memory.
            write = "echo from-a > mine && head -c 67108864 /dev/urandom > /tmp/fill && ls"
            assert (await a.exec(write)).stdout == b"mine\n"
            assert (await b.exec("ls -A; ls /tmp/fill 2>/dev/null")).stdout == b""
            assert (await a.exec("cat mine")).stdout == b"from-a\n"
            # B's own writes stay its own too.
            await b.exec("echo from-b > mine")
            assert (await a.exec("cat mine")).stdout == b"from-a\n"
            assert (await b.exec(["python3", "-c", "print(6 * 7)"])).stdout == b"42\n"
        finally:
            await a.destroy()
            await b.destroy()
        assert template.problem() is None
        assert _sha256(template.ram) == before
    finally:
        await backend.close()


def processes_naming(text: str) -> list[int]:
    """Pids of the processes whose command line holds `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes() and is_running(
                    int(entry.name)
                ):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def test_a_template_cancelled_while_it_is_made_leaves_no_folder(tmp_path: Path) -> None:
    """A template whose making is cancelled once its VM runs (a step's timeout, an engine's
    abort) leaves neither its temporary folder (its guest RAM file: up to the VM's memory)
    nor a template nor a QEMU; the next ask makes it as if nothing had happened."""
    snap = tmp_path / "snap"
    options = {"images_dir": str(qemu_images_dir()), "snapshot_dir": str(snap)}
    backend = create(tmp_path / "home", options)
    try:
        making = asyncio.ensure_future(backend.snapshot_for(VMSpec()))
        # mid-way: the template VM's QEMU has made its guest RAM file in the folder
        while not list(snap.glob("*/*.tmp/ram")):
            assert not making.done(), making.result()
            await asyncio.sleep(0.05)  # sleep-ok: polling interval of a condition wait
        assert processes_naming(str(snap))  # its QEMU runs
        making.cancel()
        with pytest.raises(asyncio.CancelledError):
            await making
        assert list(snap.glob("*/*.tmp")) == [] and list(snap.glob("*/*.template")) == []
        assert processes_naming(str(snap)) == []
        assert list(backend.run_dir.iterdir()) == []
        made = await backend.snapshot_for(VMSpec())
        assert made is not None and made.problem() is None
        assert list(snap.glob("*/*.tmp")) == []
    finally:
        await backend.close()


RESIDENT_PAGES = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
fd = os.open(os.path.realpath(sys.argv[1]), os.O_RDONLY)
size = os.fstat(fd).st_size
addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED: faults nothing in
pages = (ctypes.c_ubyte * ((size + 4095) // 4096))()
assert libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), pages) == 0
print(sum(page & 1 for page in pages))
"""


async def test_a_template_has_run_a_command_before_it_is_saved(tmp_path: Path) -> None:
    """The template guest runs one shell command before it is saved, so every clone
    starts with the shell and libc in its page cache (shared template pages, not pages
    each clone reads from the root filesystem and writes into memory of its own)."""
    options = {"images_dir": str(qemu_images_dir()), "snapshot_dir": str(tmp_path / "snap")}
    backend = create(tmp_path / "home", options)
    try:
        vm = await backend.boot(_vm_id(), VMSpec())
        try:
            assert vm.info().extra["start"] == "mapped"
            # The clone's first command, run without a shell: only the template can
            # have read /bin/sh (nothing in the guest's boot runs it).
            res = await vm.exec(["python3", "-c", RESIDENT_PAGES, "/bin/sh"])
            assert res.exit_code == 0, res.stderr
            assert int(res.stdout) > 0
        finally:
            await vm.destroy()
    finally:
        await backend.close()


async def test_template_is_rebuilt_when_stale(tmp_path: Path) -> None:
    """A new build of the image makes a new template (the old one is deleted); a template
    whose RAM file changed after it was saved is dropped and made again."""
    source = load_image(qemu_images_dir(), default_image())
    images = tmp_path / "images"
    (images / source.name).mkdir(parents=True)
    for item in source.path.iterdir():
        if item.name != "manifest.json":
            (images / source.name / item.name).symlink_to(item)
    manifest = dict(source.manifest)
    (images / source.name / "manifest.json").write_text(json.dumps(manifest))
    options = {"images_dir": str(images), "snapshot_dir": str(tmp_path / "snap")}

    async def template_of_a_boot() -> Path:
        backend = create(tmp_path / "home", options)
        try:
            vm = await backend.boot(_vm_id(), VMSpec())
            try:
                assert (await vm.exec("echo up")).stdout == b"up\n"
                assert vm.info().extra["start"] == "mapped"
            finally:
                await vm.destroy()
            made = await backend.snapshot_for(VMSpec())
            assert made is not None
            return made.folder
        finally:
            await backend.close()

    first = await template_of_a_boot()
    assert await template_of_a_boot() == first  # reused while nothing changed
    manifest["built_at"] = "2099-01-01T00:00:00Z"  # the image was rebuilt
    (images / source.name / "manifest.json").write_text(json.dumps(manifest))
    second = await template_of_a_boot()
    assert second != first and not first.exists()
    ram = second / "ram"
    os.utime(ram)  # written after it was saved (by anything): not trusted any more
    third = await template_of_a_boot()
    assert third != second and not second.exists()


def _image_copy(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    """A copy of the test image in `tmp_path/images` (kernel and initramfs linked, root
    filesystem copied) and its manifest."""
    source = load_image(qemu_images_dir(), default_image())
    folder = tmp_path / "images" / source.name
    folder.mkdir(parents=True)
    for item in source.path.iterdir():
        if item.name == "rootfs.squashfs":
            subprocess.run(["cp", str(item), str(folder / item.name)], check=True)
        elif item.name != "manifest.json":
            (folder / item.name).symlink_to(item)
    manifest = dict(source.manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder, manifest


def _rebuild(folder: Path, manifest: dict[str, object], tmp_path: Path) -> None:
    """A new build of the image at the same path, as the builder makes one: another root
    filesystem (the old one plus `/swarm-rebuilt`) and a later build time, each file
    replaced whole."""
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "swarm-rebuilt").write_text("build 2\n")
    new_rootfs = folder / ".rootfs.new"
    subprocess.run(["cp", str(folder / "rootfs.squashfs"), str(new_rootfs)], check=True)
    subprocess.run(
        ["mksquashfs", str(extra), str(new_rootfs), "-all-root", "-quiet", "-no-progress"],
        check=True,
    )  # appended: the root directory now lists the new file
    os.replace(new_rootfs, folder / "rootfs.squashfs")
    manifest["built_at"] = "2099-01-01T00:00:00Z"
    (folder / ".manifest.new").write_text(json.dumps(manifest))
    os.replace(folder / ".manifest.new", folder / "manifest.json")


async def test_a_running_engine_uses_a_rebuilt_image_with_a_new_template(tmp_path: Path) -> None:
    """The image is rebuilt while an engine runs: its next VM is restored from a template
    of the new build (never the old template, whose kernel caches the old root
    filesystem, against the new file), and the old build's template is deleted."""
    folder, manifest = _image_copy(tmp_path)
    options = {"images_dir": str(folder.parent), "snapshot_dir": str(tmp_path / "snap")}
    backend = create(tmp_path / "home", options)
    try:
        vm = await backend.boot(_vm_id(), VMSpec())
        try:
            assert vm.info().extra["start"] == "mapped"
            assert not (await vm.exec("cat /swarm-rebuilt")).ok
        finally:
            await vm.destroy()
        first = await backend.snapshot_for(VMSpec())
        assert first is not None
        _rebuild(folder, manifest, tmp_path)
        vm = await backend.boot(_vm_id(), VMSpec())
        try:
            assert vm.info().extra["start"] == "mapped"
            ran = await vm.exec("cat /swarm-rebuilt && ls /usr/bin | wc -l")
            assert ran.ok and ran.stdout.startswith(b"build 2\n"), ran
            assert int(ran.stdout.split()[-1]) > 10
        finally:
            await vm.destroy()
        second = await backend.snapshot_for(VMSpec())
        assert second is not None and second.folder != first.folder
        assert not first.folder.exists()  # an older build: pruned when the new one was saved
    finally:
        await backend.close()


async def test_a_home_whose_paths_are_too_long_for_sockets_still_gets_templates(
    tmp_path: Path,
) -> None:
    """Unix socket paths hold about 100 bytes: under a deep home the template's QMP
    socket, like the agent's, moves to a short path, and clones still restore."""
    home = tmp_path / ("deep-" * 12) / "home"
    options = {"images_dir": str(qemu_images_dir()), "snapshot_dir": str(tmp_path / "snap")}
    backend = create(home, options)
    try:
        template = await backend.snapshot_for(VMSpec())
        assert template is not None and template.mode == "mapped"
        vm = await backend.boot(_vm_id(), VMSpec())
        try:
            assert vm.info().extra["start"] == "mapped"
            assert (await vm.exec("echo ok")).stdout == b"ok\n"
        finally:
            await vm.destroy()
    finally:
        await backend.close()


async def test_engines_starting_together_make_one_template(tmp_path: Path) -> None:
    """Three engines sharing a snapshot folder ask for the same template at once: one makes
    it, the others wait for it and use it (their clones share its pages). Deleting a
    template does not disturb a clone running from it."""
    options = {"images_dir": str(qemu_images_dir()), "snapshot_dir": str(tmp_path / "snap")}
    backends = [create(tmp_path / f"home-{n}", options) for n in range(3)]
    try:
        made = await asyncio.gather(*(b.snapshot_for(VMSpec()) for b in backends))
        folders = {t.folder for t in made if t is not None}
        assert len(folders) == 1 and len(made) == 3
        (image_dir,) = (tmp_path / "snap").iterdir()
        assert [p.name for p in image_dir.glob("*.template")] == [next(iter(folders)).name]
        vm = await backends[1].boot(_vm_id(), VMSpec())
        try:
            assert vm.info().extra["start"] == "mapped"
            templates.discard(next(iter(folders)))  # e.g. pruned as a duplicate elsewhere
            ran = await vm.exec(["python3", "-c", "print(sum(range(10**6)))"])
            assert ran.ok and ran.stdout == b"499999500000\n", ran
        finally:
            await vm.destroy()
    finally:
        for b in backends:
            await b.close()


@pytest.mark.parametrize("cause", ["file system", "qemu"])
async def test_a_folder_that_cannot_map_guest_ram_gets_a_copy_template(
    cause: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """If guest RAM cannot be a file in the snapshot folder (the file system refuses the
    mappings, or QEMU cannot use the file), the backend says so and uses a copy template:
    every clone still gets RAM of its own."""
    if cause == "file system":
        monkeypatch.setattr(templates, "unmappable", lambda folder: "mmap: refused")
        expected = "guest RAM cannot be mapped from a file in"
    else:
        real = machine.ram_backend

        def refused(path: Path, memory_mb: int, shared: bool) -> str:
            return real(Path("/proc/swarm-refuses/ram"), memory_mb, shared)

        monkeypatch.setattr(machine, "ram_backend", refused)
        expected = "cannot save a mapped template VM"
    options = {"images_dir": str(qemu_images_dir()), "snapshot_dir": str(tmp_path / "snap")}
    backend = create(tmp_path / "home", options)
    try:
        vm = await backend.boot(_vm_id(), VMSpec())
        try:
            assert vm.info().extra["start"] == "copy"
            assert (await vm.exec("echo copied")).stdout == b"copied\n"
        finally:
            await vm.destroy()
    finally:
        await backend.close()
    assert expected in caplog.text and "trying a copy template" in caplog.text


def relays_for_port(port: int) -> list[int]:
    """Host pids of port relays (vm/qemu/relay.py) forwarding to `port`, whatever their
    command line's shape (this engine's or an older one's)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        relay = any(a.endswith(b"/relay.py") for a in argv) and str(port).encode() in argv
        if relay and is_running(int(entry)):
            found.append(int(entry))
    return found


async def _until(check: Callable[[], bool], timeout: float) -> bool:
    """Whether `check` holds within `timeout` s, looked at every 0.1 s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)  # sleep-ok: polling processes the host kernel starts
    return True


HOLD_CONNECTIONS = """
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    try:
        held.append(socket.create_connection(("10.0.2.100", int(sys.argv[1])), timeout=10))
    except OSError:
        pass
print("tried", flush=True)  # no more connections from here
time.sleep(120)  # sleep-ok: the guest holds its connections until the host ends the VM
"""


async def test_guest_connections_to_a_port_are_bounded_and_end_with_their_vm(
    backend: QemuBackend, tmp_path: Path
) -> None:
    """A guest opening more connections than `MAX_FORWARDED_CONNECTIONS` gets at most that
    many relays on the host (the rest are closed at once), and none outlives its QEMU, even
    while the host server keeps all of its connections open."""
    limit = MAX_FORWARDED_CONNECTIONS
    held: list[socket.socket] = []
    listener = socket.create_server(("127.0.0.1", 0), backlog=256)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    holding: list[asyncio.Future[ExecResult]] = []
    vm = await backend.boot(_vm_id(), VMSpec(memory_mb=256, network=True, allowed_ports=(port,)))
    try:
        await vm.put_file("hold.py", HOLD_CONNECTIONS.encode())
        # (the step holds them: a command's leftover processes end with it)
        tried = asyncio.Event()
        holding.append(
            asyncio.ensure_future(
                vm.exec(
                    ["python3", "hold.py", str(port), str(limit + 8)],
                    timeout=120,
                    on_output=lambda _s, data: tried.set() if b"tried" in data else None,
                )
            )
        )
        assert await _until(lambda: len(held) >= limit, 80), (len(held), relays_for_port(port))
        await asyncio.wait_for(tried.wait(), 80)  # the guest tries no more connections
        # those past the limit exit at once (each starts, finds no slot and ends; one the
        # guest is still making exists for a moment): then at most `limit` remain, the ones
        # whose connections the host holds
        assert await _until(lambda: len(relays_for_port(port)) <= limit, 30)
        for _ in range(20):
            assert len(relays_for_port(port)) <= limit
            await asyncio.sleep(0.1)  # sleep-ok: sampling the host's processes
        assert len(held) == limit
        # QEMU gone (as when the engine is SIGKILLed): its relays end by themselves
        os.killpg(vm.pid, signal.SIGKILL)
        assert await _until(lambda: not relays_for_port(port), 10), relays_for_port(port)
    finally:
        await vm.destroy()
        for task in holding:
            with contextlib.suppress(VMError, asyncio.CancelledError):
                await task
        stop.set()
        acceptor.join()
        for conn in held:
            conn.close()
        listener.close()


async def test_destroy_and_cleanup_stop_the_relays_a_vm_left(
    backend: QemuBackend, tmp_path: Path
) -> None:
    """A relay that has not ended by itself (stopped here with SIGSTOP, its QEMU end held
    open and its host connection held too) is killed by `cleanup` once its QEMU is gone
    (an engine killed with its VMs), and by its VM's `destroy`."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    port = listener.getsockname()[1]
    strays: list[subprocess.Popen[bytes]] = []
    ends: list[socket.socket] = []

    def stray(folder: Path) -> subprocess.Popen[bytes]:
        qemu_end, relay_end = socket.socketpair()
        proc = subprocess.Popen(  # what QEMU starts for a connection, its QEMU end held
            shlex.split(relay_command(port, folder).replace(",,", ",")),
            stdin=relay_end.fileno(),
            stdout=relay_end.fileno(),
            start_new_session=True,
        )
        relay_end.close()
        strays.append(proc)
        ends.append(qemu_end)
        ends.append(listener.accept()[0])  # it has its slot and its QEMU: it runs
        os.kill(proc.pid, signal.SIGSTOP)
        return proc

    spec = VMSpec(memory_mb=256, network=True, allowed_ports=(port,))
    try:
        killed = await backend.boot(_vm_id(), spec)
        first = stray(backend.run_dir / killed.id)
        os.killpg(killed.pid, signal.SIGKILL)  # its QEMU gone, its folder left
        await wait_exit(killed.pid)
        options = {"images_dir": str(qemu_images_dir())}
        assert stop_leftover_relays(tmp_path / "home", options) == [first.pid]
        assert first.wait(5) == -signal.SIGKILL
        await killed.destroy()

        vm = await backend.boot(_vm_id(), spec)
        second = stray(backend.run_dir / vm.id)
        assert stop_leftover_relays(tmp_path / "home", options) == []  # a live VM's: kept
        await vm.destroy()
        assert second.wait(5) == -signal.SIGKILL
        assert not relays_for_port(port)
    finally:
        for proc in strays:
            proc.kill()
            proc.wait()
        for end in ends:
            end.close()
        listener.close()


async def test_a_vm_killed_mid_command_says_how_qemu_ended(backend: QemuBackend) -> None:
    """QEMU killed while a command runs (the host's OOM killer, a person): the command's
    error says QEMU was killed and by which signal, not only that the channel closed."""
    vm = await backend.boot(_vm_id(), VMSpec(memory_mb=256))
    running = asyncio.Event()
    try:
        command = asyncio.ensure_future(
            vm.exec("echo started; sleep 60", on_output=lambda _s, _d: running.set())
        )
        await asyncio.wait_for(running.wait(), 60)
        os.killpg(vm.pid, signal.SIGKILL)
        with pytest.raises(VMError) as failed:
            await asyncio.wait_for(command, 30)
        said = str(failed.value)
        assert said.startswith(f"QEMU was killed by SIGKILL during exec in VM {vm.id}"), said
        assert "\n" not in said, said
        with pytest.raises(VMError, match=r"is not running \(QEMU was killed by SIGKILL\)$"):
            await vm.put_file("later.txt", b"")  # (a call after it: said the same way)
    finally:
        await vm.destroy()


async def test_a_guest_that_panics_after_flooding_its_console_says_the_panic(
    backend: QemuBackend,
) -> None:
    """console.log keeps only the console's first MiB: a guest that floods it, then
    panics, is said by the console's real end (kept in memory), the panic line, not by the
    flood that filled the file."""
    vm = await backend.boot(_vm_id(), VMSpec(memory_mb=256))
    try:
        can = await vm.exec("test -w /proc/sysrq-trigger && test -w /dev/ttyS0")
        if can.exit_code != 0:  # (the tiny image's kernel has no magic SysRq)
            pytest.skip("this image's guest cannot crash its kernel on demand (no sysrq)")
        flood = "yes flood-line | head -c 1500000 > /dev/ttyS0; echo c > /proc/sysrq-trigger"
        with pytest.raises(VMError) as failed:
            await asyncio.wait_for(vm.exec(flood + "; sleep 60"), 120)
        said = str(failed.value)
        assert said.startswith(f"QEMU exited (0) during exec in VM {vm.id}: "), said
        assert "Kernel panic" in said and "\n" not in said, said
    finally:
        await vm.destroy()


async def test_a_guest_whose_agent_is_killed_says_so(backend: QemuBackend) -> None:
    """The guest agent killed inside the guest (by a command, its OOM killer): its init
    ends the guest, QEMU exits (on the tiny image's kernel too, which has no ACPI to power
    off with: a power-off halted it, QEMU ran on and the call waited out its timeout), and
    the call's error says how the agent ended, not the kernel's restart line after it."""
    vm = await backend.boot(_vm_id(), VMSpec(memory_mb=256))
    try:
        kill = (
            "for p in /proc/[0-9]*; do"
            ' [ "$(cat $p/comm 2>/dev/null)" = swarm-agent ] && kill -9 ${p#/proc/};'
            " done; sleep 60"
        )
        with pytest.raises(VMError) as failed:
            await asyncio.wait_for(vm.exec(kill), 60)
        said = str(failed.value)
        assert said.startswith(f"QEMU exited (0) during exec in VM {vm.id}: "), said
        assert said.endswith("swarm-init: the guest agent was killed by signal 9 (Killed)"), said
    finally:
        await vm.destroy()


async def test_a_guest_that_halts_is_ended_and_said(backend: QemuBackend) -> None:
    """A guest whose kernel halts (a command calls reboot(2) with HALT; on the tiny
    image a power-off halts too, its kernel has no ACPI) stops its CPUs and QEMU runs on:
    the engine ends QEMU once the console says so, and the call fails with the halt,
    not at its timeout; a later call says the same."""
    vm = await backend.boot(_vm_id(), VMSpec(memory_mb=256))
    try:
        halt = "python3 -c 'import ctypes; ctypes.CDLL(None).reboot(0xCDEF0123)'; sleep 60"
        with pytest.raises(VMError) as failed:
            await asyncio.wait_for(vm.exec(halt), 30)
        said = str(failed.value)
        assert said == f"the guest halted during exec in VM {vm.id}: reboot: System halted", said
        with pytest.raises(VMError, match=r"is not running \(its guest halted: reboot: System"):
            await vm.put_file("later.txt", b"")
    finally:
        await vm.destroy()
