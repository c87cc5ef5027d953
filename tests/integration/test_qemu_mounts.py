"""Host folders shown read-only in a microVM (`VMSpec.mounts`, vm/qemu/mounts.py): packed
once into a cached squashfs image, attached as a read-only drive, mounted by the guest; a
VM that cannot get them does not boot. The first tests need no QEMU (the real mksquashfs
where they pack); the last ones boot guests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from swarm_engine.agents.claude_code import install
from swarm_engine.config import load_settings
from swarm_engine.errors import VMError
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.qemu import mounts
from swarm_engine.vm.qemu.accel import AccelChoice
from swarm_engine.vm.qemu.backend import QemuBackend, create
from swarm_engine.vm.qemu.doctor import unavailable
from swarm_engine.vm.qemu.folders import images_dir_for
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


def cached(cache: Path) -> list[str]:
    """The images in `cache` (names), sorted; each must have its sidecar, and every
    sidecar its image."""
    images = sorted(p.name for p in cache.glob("*.squashfs"))
    sidecars = sorted(p.name[1:-3] for p in cache.glob(".*.squashfs.ok"))
    assert sidecars == images
    return images


@needs_mksquashfs
def test_the_cache_keeps_the_most_recently_used_images(tmp_path: Path) -> None:
    """After each pack the cache keeps the newest image of each folder, `keep` in all,
    by last use (packed or held); sidecars go with their images, other files stay."""
    cache = tmp_path / "cache"
    folders = {n: tools(tmp_path / f"claude-code-{n}", f"{n}\n") for n in "abcd"}
    a, b, c, d = folders.values()
    images = {n: mounts.pack(folders[n], cache, keep=3) for n in "abc"}
    live = cache / f".other.squashfs.{os.getpid()}.tmp"  # a packer still at work
    live.write_bytes(b"x")
    (cache / "notes.txt").write_text("not an image\n")
    assert cached(cache) == sorted(p.name for p in images.values())
    assert mounts.pack(a, cache, keep=3) == images["a"]  # used again: now newer than b, c
    images["d"] = mounts.pack(d, cache, keep=3)
    assert cached(cache) == sorted(images[n].name for n in "acd")  # b: least recently used
    tools(c, "c, reinstalled\n")  # new content: a new image replaces the folder's old one
    images["c2"] = mounts.pack(c, cache, keep=3)
    assert cached(cache) == sorted(images[n].name for n in ("a", "c2", "d"))
    images["b2"] = mounts.pack(b, cache, keep=1)  # a smaller bound applies at the next pack
    assert cached(cache) == [images["b2"].name]
    assert live.exists() and (cache / "notes.txt").exists()
    assert mounts.damage(images["b2"]) is None


@needs_mksquashfs
def test_an_image_held_for_a_vm_is_never_pruned(tmp_path: Path) -> None:
    """An image handed to a VM (held until QEMU has opened it) survives any prune, whole
    and with its sidecar; once released, the next pack deletes it. An open file (what a
    running QEMU has) still reads the deleted image."""
    cache = tmp_path / "cache"
    a, b, c = (tools(tmp_path / f"tools-{n}", f"{n}\n") for n in "abc")
    with contextlib.ExitStack() as running:
        with contextlib.ExitStack() as holds:
            (disk,) = mounts.pack_all([(str(a), "/opt/a")], cache, holds, keep=1)
            qemu = running.enter_context(disk.image.open("rb"))  # as QEMU opens a drive
            for folder in (b, c):
                mounts.pack(folder, cache, keep=1)
                assert disk.image.exists() and mounts.damage(disk.image) is None
            assert len(cached(cache)) == 2  # held: over the bound for now
        other = mounts.pack(b, cache, keep=1)
        assert cached(cache) == [other.name]  # released: deleted at the next pack
        assert qemu.read(4) == b"hsqs"  # the running VM keeps its copy


@needs_mksquashfs
def test_an_image_let_go_is_pruned_by_the_next_use_of_the_cache(tmp_path: Path) -> None:
    """An image held while a pack pruned stays over the bound only until it is let go:
    the next use of the cache, even a hit that packs nothing, prunes it."""
    cache = tmp_path / "cache"
    a, b = (tools(tmp_path / f"tools-{n}", f"{n}\n") for n in "ab")
    with contextlib.ExitStack() as holds:
        (held,) = mounts.pack_all([(str(a), "/opt/a")], cache, holds, keep=1)
        image_b = mounts.pack(b, cache, keep=1)
        assert held.image.exists()
        assert len(cached(cache)) == 2  # a is held: over the bound for now
    assert mounts.pack(b, cache, keep=1) == image_b  # a hit: nothing packed
    assert cached(cache) == [image_b.name]  # and a, let go, is gone


@needs_mksquashfs
def test_engines_packing_and_pruning_at_once_never_lose_a_held_image(tmp_path: Path) -> None:
    """Many engines (threads, each with its own files and locks) share one cache bounded
    to one image, each packing a folder of its own and one shared with another: every
    image they hold stays whole under its name until they let go, and at the end the
    cache is within its bound."""
    cache = tmp_path / "cache"
    folders = [tools(tmp_path / f"tools-{n}", f"{n}\n") for n in range(6)]
    problems: list[str] = []

    def engine(n: int) -> None:
        for turn in range(10):
            folder = folders[(n + turn % 2) % len(folders)]
            with contextlib.ExitStack() as holds:
                (disk,) = mounts.pack_all([(str(folder), "/opt/t")], cache, holds, keep=1)
                for _ in range(3):  # while held: whole, under its name, readable by path
                    why = mounts.damage(disk.image)
                    if why is not None:
                        problems.append(f"engine {n}: {disk.image.name}: {why}")
                    with disk.image.open("rb") as fh:
                        if fh.read(4) != b"hsqs":
                            problems.append(f"engine {n}: {disk.image.name}: not squashfs")

    with ThreadPoolExecutor(len(folders)) as pool:
        list(pool.map(engine, range(len(folders))))
    assert problems == []
    mounts.pack(folders[0], cache, keep=1)  # nothing held now: the bound holds
    assert len(cached(cache)) == 1
    assert not list(cache.glob("*.tmp"))


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
        assert len(list((tmp_path / "cache").glob("*.squashfs"))) == 1  # one image, two drives
        other = mounts.pack(tools(tmp_path / "other"), tmp_path / "cache", keep=1)
        assert [p.name for p in (tmp_path / "cache").glob("*.squashfs")] == [other.name]
        again = await vm.exec("echo 3 > /proc/sys/vm/drop_caches && cat /srv/again/data.txt")
        assert again.ok and again.stdout == b"v1\n", again  # pruned: QEMU still has it open
    finally:
        await vm.destroy()


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
