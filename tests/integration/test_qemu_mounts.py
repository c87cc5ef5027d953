"""Host folders shown read-only in a microVM (`VMSpec.mounts`, vm/qemu/mounts.py): packed
once into a cached squashfs image, attached as a read-only drive, mounted by the guest; a
VM that cannot get them does not boot. The first tests need no QEMU (the real mksquashfs
where they pack); the last ones boot guests."""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from swarm_engine.agents.claude_code import install
from swarm_engine.config import load_settings
from swarm_engine.errors import VMError
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.qemu import mounts
from swarm_engine.vm.qemu.accel import AccelChoice
from swarm_engine.vm.qemu.backend import QemuBackend, create, images_dir_for
from swarm_engine.vm.qemu.doctor import unavailable
from swarm_engine.vm.qemu.image import Image
from swarm_engine.vm.qemu.machine import MachineSpec

needs_mksquashfs = pytest.mark.skipif(
    shutil.which("mksquashfs") is None, reason="mksquashfs not installed (squashfs-tools)"
)


def tools(folder: Path, text: str = "v1\n") -> Path:
    (folder / "bin").mkdir(parents=True, exist_ok=True)
    (folder / "bin" / "hello").write_text(f"#!/bin/sh\necho hello {text}")
    (folder / "bin" / "hello").chmod(0o755)
    (folder / "data.txt").write_text(text)
    return folder


def test_guest_paths_must_be_absolute_and_plain() -> None:
    assert mounts.guest_path("/opt/claude-code") == "/opt/claude-code"
    for bad in ("opt/x", "/", "/opt/../etc", "/opt/x/", "/opt//x", "/opt/x\n"):
        with pytest.raises(VMError, match="not an absolute path"):
            mounts.guest_path(bad)


def test_drives_are_read_only_after_the_root_drive_and_tcg_gets_a_modern_cpu(
    tmp_path: Path,
) -> None:
    image = Image("cloud", tmp_path, {"cmdline": "console=ttyS0"})
    disk = mounts.Disk(tmp_path / "a,b.squashfs", "/opt/tools")
    tcg = MachineSpec(image, AccelChoice("tcg", "t"), "qemu", tmp_path / "s", drives=(disk,),
                      tcg_cpu=mounts.TCG_CPU)  # fmt: skip
    argv = tcg.argv()
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert drives[0].startswith("id=root,") and "readonly=on" in drives[0]
    assert drives[1] == f"id=mount0,file={tmp_path}/a,,b.squashfs,format=raw,if=none,readonly=on"
    assert "virtio-blk-device,drive=mount0,serial=swarm-mount-0" in argv
    assert argv[argv.index("-cpu") + 1] == "max"
    kvm = MachineSpec(image, AccelChoice("kvm", "t"), "qemu", tmp_path / "s", drives=(disk,),
                      tcg_cpu=mounts.TCG_CPU)  # fmt: skip
    assert kvm.argv().count("-cpu") == 1 and "host" in kvm.argv()  # KVM: the host's CPU
    plain = MachineSpec(image, AccelChoice("tcg", "t"), "qemu", tmp_path / "s")
    assert "-cpu" not in plain.argv() and plain.argv().count("-drive") == 1


@needs_mksquashfs
def test_a_folder_is_packed_once_and_again_only_when_it_changes(tmp_path: Path) -> None:
    folder, cache = tools(tmp_path / "tools"), tmp_path / "cache"
    first = mounts.pack(folder, cache)
    assert first.is_file() and first.read_bytes()[:4] == b"hsqs"  # a squashfs image
    stamp = first.stat().st_mtime_ns
    assert mounts.pack(folder, cache) == first and first.stat().st_mtime_ns == stamp
    tools(folder, "v2, longer\n")  # new content: a new image; the old one is deleted
    second = mounts.pack(folder, cache)
    assert second != first and second.is_file() and not first.exists()
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == [second.name]
    assert not list(cache.glob("*.tmp"))


@needs_mksquashfs
@pytest.mark.parametrize("damage", ["zeroed", "truncated", "garbage", "no sidecar", "restamped"])
def test_a_damaged_cached_image_is_packed_again(
    damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cached image is used only if it is whole: anything else is packed again (the
    step would otherwise fail on every run)."""
    folder, cache = tools(tmp_path / "tools"), tmp_path / "cache"
    image = mounts.pack(folder, cache)
    good = image.read_bytes()
    assert mounts.damage(image) is None
    size = len(good)
    if damage == "zeroed":
        image.write_bytes(bytes(size))
    elif damage == "truncated":
        with image.open("r+b") as fh:
            fh.truncate(size // 2)
    elif damage == "garbage":
        image.write_bytes(os.urandom(size))
    elif damage == "no sidecar":
        image.with_name(f".{image.name}.ok").unlink()
    else:  # same size, a lost write, mtime put back: only the superblock tells
        st = image.stat()
        with image.open("r+b") as fh:
            fh.write(b"\0" * 96)
        os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert mounts.damage(image) is not None
    assert mounts.pack(folder, cache) == image
    assert mounts.damage(image) is None and image.read_bytes()[:4] == b"hsqs"
    assert image.stat().st_size == size
    if damage != "no sidecar":
        assert f"cached image {image} is not whole" in caplog.text


FAKE_MKSQUASHFS = """#!/bin/sh
echo partial > "$2"
echo $$ > {fifo}
exec sleep 600
"""


@needs_mksquashfs
def test_a_killed_engine_leaves_no_packer_and_no_partial_image(tmp_path: Path) -> None:
    """SIGKILL while packing: mksquashfs dies with the engine (PDEATHSIG), and the next
    pack deletes the dead engine's temporary file."""
    folder, cache = tools(tmp_path / "tools"), tmp_path / "cache"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fake = tmp_path / "fake-mksquashfs"
    fake.write_text(FAKE_MKSQUASHFS.format(fifo=fifo))
    fake.chmod(0o755)
    script = (
        "from pathlib import Path\n"
        "from swarm_engine.vm.qemu import mounts\n"
        f"mounts.MKSQUASHFS = {str(fake)!r}\n"
        f"mounts.pack(Path({str(folder)!r}), Path({str(cache)!r}))\n"
    )
    engine = subprocess.Popen([sys.executable, "-c", script])
    try:
        packer = int(fifo.read_text())  # blocks until the fake mksquashfs runs
    finally:
        engine.kill()
        engine.wait()
    assert _exits(packer, timeout=30), "mksquashfs outlived its engine"
    partial = list(cache.glob(".*.tmp"))
    assert [p.name for p in partial] == [f".{_target_name(cache)}.{engine.pid}.tmp"]
    live = cache / f".other.squashfs.{os.getpid()}.tmp"  # a packer still at work: kept
    live.write_bytes(b"x")
    image = mounts.pack(folder, cache)
    assert mounts.damage(image) is None
    assert [p.name for p in cache.glob(".*.tmp")] == [live.name]


def _target_name(cache: Path) -> str:
    (partial,) = cache.glob(".*.tmp")
    return partial.name.rsplit(".", 2)[0][1:]


def _exits(pid: int, timeout: float) -> bool:
    """Wait (on a pidfd, no polling) until `pid` has ended."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


FAKE_NPM = """#!/bin/sh
echo $$ > {fifo}
exec sleep 600
"""


def test_a_killed_claude_code_install_leaves_no_npm_and_no_partial_folder(
    tmp_path: Path,
) -> None:
    """The same for installing Claude Code: npm dies with the engine, and the next install
    deletes the dead engine's `.<version>.<pid>.tmp` folder."""
    cache = tmp_path / "claude-code"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fake = tmp_path / "npm"
    fake.write_text(FAKE_NPM.format(fifo=fifo))
    fake.chmod(0o755)
    script = (
        "from pathlib import Path\n"
        "from swarm_engine.agents.claude_code import install\n"
        f"install.ensure(Path({str(cache)!r}), '9.9.9', npm={str(fake)!r})\n"
    )
    engine = subprocess.Popen([sys.executable, "-c", script])
    try:
        npm = int(fifo.read_text())
    finally:
        engine.kill()
        engine.wait()
    assert _exits(npm, timeout=30), "npm outlived its engine"
    partial = cache / f".9.9.9.{engine.pid}.tmp"
    live = cache / f".9.9.8.{os.getpid()}.tmp"
    live.mkdir()
    assert partial.is_dir()
    assert install.sweep(cache) == 1
    assert not partial.exists() and live.exists()


def test_no_image_means_no_vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: packing fails -> `VMError` (one line), before any QEMU starts."""
    folder = tools(tmp_path / "tools")
    monkeypatch.setattr(mounts, "MKSQUASHFS", "mksquashfs-not-installed")
    with pytest.raises(VMError) as missing:
        mounts.pack(folder, tmp_path / "cache")
    assert str(missing.value) == (
        f"cannot show {folder} in a microVM: mksquashfs not found (apt-get install squashfs-tools)"
    )
    monkeypatch.setattr(mounts, "MKSQUASHFS", "false")
    with pytest.raises(VMError, match=r"^cannot pack .*: mksquashfs exited with 1: no message$"):
        mounts.pack(folder, tmp_path / "cache")
    with pytest.raises(VMError, match="not a folder"):
        mounts.pack(tmp_path / "missing", tmp_path / "cache")
    left = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith("-lock")]
    assert left == []  # nothing half-written is left
    backend = create(tmp_path / "home", {"images_dir": str(tmp_path / "images")})
    spec = VMSpec(mounts=((str(folder), "/opt/tools"),))
    with pytest.raises(VMError, match="mksquashfs exited with 1"):
        asyncio.run(backend.boot("vm-no-image", spec))
    assert not (tmp_path / "home" / "run" / "qemu" / "vm-no-image").exists()


# -- in a guest ------------------------------------------------------------------------


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[QemuBackend]:
    images = images_dir_for(load_settings().home)
    reason = unavailable(images)
    if reason is not None:
        pytest.skip(reason)
    options = {"images_dir": str(images), "mounts_dir": str(tmp_path / "cache")}
    made = create(tmp_path / "home", options)
    try:
        yield made
    finally:
        await made.close()


@pytest.mark.qemu
@needs_mksquashfs
async def test_a_host_folder_is_shown_read_only_in_the_guest(
    backend: QemuBackend, tmp_path: Path
) -> None:
    folder = tools(tmp_path / "tools")
    spec = VMSpec(mounts=((str(folder), "/opt/tools"), (str(folder), "/srv/again")))
    vm = await backend.boot("vm-mounts", spec)
    try:
        ran = await vm.exec("/opt/tools/bin/hello && cat /srv/again/data.txt")
        assert ran.ok and ran.stdout == b"hello v1\nv1\n", ran
        table = (await vm.exec(["cat", "/proc/mounts"])).stdout.decode().splitlines()
        for at in ("/opt/tools", "/srv/again"):
            (line,) = [row for row in table if row.split()[1] == at]
            device, _, kind, options = line.split()[:4]
            assert kind == "squashfs" and {"ro", "nodev", "nosuid"} <= set(options.split(","))
            assert device in ("/dev/vdb", "/dev/vdc")
        root = await vm.exec(["cat", "/sys/block/vda/serial"])  # the root stays the first drive
        assert root.ok and root.stdout.strip() == b""
        for attempt in ("touch /opt/tools/x", "mount -o remount,rw /opt/tools"):
            refused = await vm.exec(attempt)  # root in the guest; the drive is read-only
            assert not refused.ok, attempt
    finally:
        await vm.destroy()
    assert len(list((tmp_path / "cache").glob("*.squashfs"))) == 1  # one image, two drives


@pytest.mark.qemu
@needs_mksquashfs
async def test_a_mount_that_fails_in_the_guest_ends_the_vm(
    backend: QemuBackend, tmp_path: Path
) -> None:
    folder = tools(tmp_path / "tools")
    with pytest.raises(VMError) as failed:
        await backend.boot("vm-bad-mount", VMSpec(mounts=((str(folder), "/proc/tools"),)))
    assert str(failed.value).startswith(
        "VM vm-bad-mount: cannot mount the host's read-only folders at /proc/tools: "
    )
    (image,) = (tmp_path / "cache").glob("*.squashfs")
    assert str(failed.value).endswith(f"(cached images: {image})")  # the file to look at
    assert "\n" not in str(failed.value)
    assert not (backend.run_dir / "vm-bad-mount").exists()  # the VM was destroyed
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_qemu_for(p, backend)]


def _is_qemu_for(pid: str, backend: QemuBackend) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"qemu" in cmdline and str(backend.run_dir).encode() in cmdline
