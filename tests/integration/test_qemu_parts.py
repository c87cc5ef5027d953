"""The qemu backend's parts that need no QEMU: the guest agent (run on the host over a
socketpair), the framing, the cpio writer, the vmlinux extractor, options, accel choice."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.cli import wait_until

from swarm_engine.errors import ConfigError, VMError
from swarm_engine.vm.backends import create_backend
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.qemu.accel import choose_accel
from swarm_engine.vm.qemu.builder import (
    BuildRequest,
    build_image,
    compile_agent,
    strip_module_signature,
)
from swarm_engine.vm.qemu.config import QemuOptions
from swarm_engine.vm.qemu.forwards import MAX_FORWARDED_CONNECTIONS
from swarm_engine.vm.qemu.image import GUEST_DIR, recipe_hash
from swarm_engine.vm.qemu.initramfs import Entry, write_cpio
from swarm_engine.vm.qemu.machine import MachineSpec
from swarm_engine.vm.qemu.protocol import MAX_FILE, Channel, encode, read_frame
from swarm_engine.vm.qemu.vm import QemuVM
from swarm_engine.vm.qemu.vmlinux import extract_vmlinux


@pytest.fixture(scope="module")
def c_agent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C guest agent, compiled here like the image builder does (skipped without gcc)."""
    out = tmp_path_factory.mktemp("c-agent") / "swarm-agent"
    problem = compile_agent(out)
    if problem is not None:
        pytest.skip(f"cannot build the C guest agent: {problem}")
    return out


@pytest.fixture
async def agent_vm(c_agent: Path, tmp_path: Path) -> AsyncIterator[QemuVM]:
    """A QemuVM whose 'guest' is the real guest agent (C) running on this host."""
    host_end, guest_end = socket.socketpair()
    workspace = tmp_path / "workspace"
    proc = await asyncio.create_subprocess_exec(
        str(c_agent), "--fd", str(guest_end.fileno()),
        "--workspace", str(workspace), "--cgroup-root", "none",
        pass_fds=[guest_end.fileno()], start_new_session=True,
    )  # fmt: skip
    guest_end.close()
    reader, writer = await asyncio.open_unix_connection(sock=host_end)
    channel = Channel(reader, writer)
    await channel.handshake(30)
    vm = QemuVM(
        "vm-agent", spec=VMSpec(timeout_seconds=30), proc=proc, channel=channel,
        folder=tmp_path / "run", socket_path=tmp_path / "none.sock", kill_grace=5,
        accel="none", booted_ms=0,
    )  # fmt: skip
    try:
        yield vm
    finally:
        await vm.destroy()


async def test_agent_exec_streams_and_exit_codes(agent_vm: QemuVM) -> None:
    chunks: list[tuple[str, bytes]] = []
    res = await agent_vm.exec(
        "echo one; echo two >&2; exit 5", on_output=lambda s, c: chunks.append((s, c))
    )
    assert (res.exit_code, res.stdout, res.stderr) == (5, b"one\n", b"two\n")
    assert b"".join(c for s, c in chunks if s == "stdout") == b"one\n"
    res = await agent_vm.exec(["cat"], stdin=b"\x00\x01binary")
    assert res.stdout == b"\x00\x01binary"
    missing = await agent_vm.exec(["no-such-binary-xyz"])
    assert missing.exit_code == 127


async def test_agent_concurrent_requests_share_the_channel(agent_vm: QemuVM) -> None:
    results = await asyncio.gather(*(agent_vm.exec(f"echo {i}") for i in range(8)))
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(8)]
    assert await agent_vm.ping() >= 0


async def test_agent_timeout_kills_background_children(agent_vm: QemuVM) -> None:
    res = await agent_vm.exec("sleep 120 & sleep 120", timeout=0.5)
    assert res.timed_out and res.exit_code == 124


async def test_agent_exec_ends_with_its_own_process(agent_vm: QemuVM) -> None:
    # no cgroups here (--cgroup-root none): the command's process group is killed
    tag = f"swarm-tag-{uuid.uuid4().hex}"
    res = await agent_vm.exec(f"sh -c 'sleep 120; true {tag}' & echo started", timeout=60)
    assert (res.exit_code, res.stdout, res.timed_out) == (0, b"started\n", False)
    assert res.duration_ms < 10_000 and not _tagged(tag)
    # a job that left the group keeps the pipe: it is read for a short drain, then let go
    script = f"setsid sh -c 'echo early; sleep 120; true {tag}-x' & sleep 0.5; echo main"
    res = await agent_vm.exec(script, timeout=60)
    assert (res.exit_code, res.timed_out) == (0, False)
    assert sorted(res.stdout.split()) == [b"early", b"main"] and res.duration_ms < 10_000
    for pid in _tagged(f"{tag}-x"):  # ours, found by its unique tag
        os.kill(pid, signal.SIGKILL)


def _tagged(tag: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and tag.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return pids


async def test_agent_files_and_path_checks(agent_vm: QemuVM, tmp_path: Path) -> None:
    await agent_vm.put_file("a/b/c.bin", b"\xff" * 70000, mode=0o600)
    assert await agent_vm.get_file("a/b/c.bin") == b"\xff" * 70000
    assert (tmp_path / "workspace/a/b/c.bin").stat().st_mode & 0o777 == 0o600
    os.symlink("/etc", tmp_path / "workspace" / "out")
    with pytest.raises(VMError, match="outside"):
        await agent_vm.get_file("out/passwd")
    with pytest.raises(VMError):
        await agent_vm.get_file("missing")
    with pytest.raises(VMError):
        await agent_vm.exec("true", cwd="missing-folder")


async def test_channel_reports_a_dead_guest(agent_vm: QemuVM) -> None:
    os.killpg(agent_vm.pid, 9)
    with pytest.raises(VMError):
        await agent_vm.exec("echo never")


async def test_framing_roundtrip() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(encode({"t": "out", "id": 7}, b"\x00payload"))
    reader.feed_data(encode({"t": "exit", "id": 7, "code": 0}))
    reader.feed_eof()
    assert await read_frame(reader) == ({"t": "out", "id": 7}, b"\x00payload")
    assert await read_frame(reader) == ({"t": "exit", "id": 7, "code": 0}, b"")
    assert await read_frame(reader) is None
    truncated = asyncio.StreamReader()
    truncated.feed_data(encode({"t": "x"}, b"abc")[:-1])
    truncated.feed_eof()
    with pytest.raises(VMError):
        await read_frame(truncated)


def test_cpio_is_readable_by_cpio(tmp_path: Path) -> None:
    archive = tmp_path / "initramfs.cpio"
    write_cpio(
        [Entry("bin/tool", 0o100755, b"#!/bin/sh\n"), Entry("init", 0o100755, b"x" * 5)], archive
    )
    listing = subprocess.run(
        ["cpio", "-t", "--quiet"], input=archive.read_bytes(), capture_output=True, check=True
    )
    assert listing.stdout.decode().split() == ["bin", "bin/tool", "init"]


def test_vmlinux_extraction_finds_the_elf() -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 64
    bzimage = b"MZ header and setup code \x1f\x8b\x08 junk" + gzip.compress(elf) + b"\0" * 100
    assert extract_vmlinux(bzimage) == elf
    with pytest.raises(VMError):
        extract_vmlinux(b"no kernel in here")


def test_module_signature_is_stripped() -> None:
    magic = b"~Module signature appended~\n"
    signed = b"ELFDATA" + b"S" * 10 + struct.pack(">BBBBBxxxI", 0, 0, 0, 0, 0, 10) + magic
    assert strip_module_signature(signed) == b"ELFDATA"
    assert strip_module_signature(b"unsigned") == b"unsigned"


def test_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        create_backend("qemu", tmp_path, {"accel": "warp"})
    with pytest.raises(ConfigError):
        create_backend("qemu", tmp_path, {"no_such_option": 1})
    with pytest.raises(ConfigError):
        create_backend("qemu", tmp_path, {"warm": -1})
    assert QemuOptions(accel="tcg", warm=2).warm == 2


def test_accel_choice() -> None:
    assert choose_accel("tcg", "qemu-system-x86_64").mode == "tcg"
    assert choose_accel("tcg", "qemu").qemu_args() == ["-accel", "tcg,thread=multi,tb-size=64"]
    with pytest.raises(VMError):
        choose_accel("auto", "/no/such/qemu")


async def test_the_tcg_translation_buffer_is_an_option(tmp_path: Path) -> None:
    """`tcg_tb_mb` sets `-accel tcg,tb-size=N` (the most memory a busy VM's translated
    code takes); below 16 MiB execs thrash, so that is refused when the settings load."""
    from swarm_engine.vm.qemu.backend import create

    backend = create(tmp_path, {"accel": "tcg", "tcg_tb_mb": 32})
    try:
        assert (await backend.accel()).qemu_args() == ["-accel", "tcg,thread=multi,tb-size=32"]
    finally:
        await backend.close()
    assert QemuOptions().tcg_tb_mb == 64
    for bad in (8, 4096, "64", 1e2, True):  # a number of MiB, not text, a float or a flag
        with pytest.raises(ConfigError):
            create_backend("qemu", tmp_path, {"tcg_tb_mb": bad})


def test_qemu_modules_import_no_circle() -> None:
    """The qemu package's modules import each other without a cycle (builder.py and
    tinykernel.py share `tools.py` instead of importing each other)."""
    import ast

    package = Path(__file__).parents[2] / "src/swarm_engine/vm/qemu"
    prefix = "swarm_engine.vm.qemu."
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        names = {
            (node.module or "").removeprefix(prefix)
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(prefix)
        }
        graph[path.stem] = names
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in trail, " -> ".join((*trail, module))
        if module not in done:
            for imported in graph.get(module, set()):
                visit(imported, (*trail, module))
            done.add(module)

    for module in graph:
        visit(module, ())
    assert "builder" not in graph["tinykernel"] and "tinykernel" in graph["builder"]


def test_recipe_hash_depends_on_the_kernel_kind() -> None:
    assert recipe_hash("cloud") != recipe_hash("tiny")
    assert recipe_hash("cloud") == recipe_hash("cloud")


def test_tiny_kernel_fragment_and_check() -> None:
    from swarm_engine.vm.qemu.tinykernel import config_problems, fragment_options

    wanted = fragment_options()
    for needed in ("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES", "CONFIG_VIRTIO_BLK", "CONFIG_PVH",
                   "CONFIG_VIRTIO_CONSOLE", "CONFIG_SQUASHFS_LZ4", "CONFIG_OVERLAY_FS",
                   "CONFIG_CGROUPS", "CONFIG_SERIAL_8250_CONSOLE", "CONFIG_BLK_DEV_INITRD"):  # fmt: skip
        assert wanted[needed], needed
    assert wanted["CONFIG_MODULES"] is False and wanted["CONFIG_PCI"] is False
    final = "CONFIG_PVH=y\n# CONFIG_PCI is not set\nCONFIG_VIRTIO_BLK=m\n"
    problems = config_problems(final, {"CONFIG_PVH": True, "CONFIG_PCI": False,
                                       "CONFIG_VIRTIO_BLK": True, "CONFIG_TTY": True,
                                       "CONFIG_MODULES": False})  # fmt: skip
    assert problems == ["CONFIG_TTY=y"]


def test_tiny_kernel_source_edits(tmp_path: Path) -> None:
    from swarm_engine.vm.qemu.tinykernel import SOURCE_EDITS, apply_source_edits, kernel_key

    for rel, old, _new in SOURCE_EDITS:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"before\n{old}\nafter\n")
    apply_source_edits(tmp_path)
    for rel, _old, new in SOURCE_EDITS:
        assert (tmp_path / rel).read_text() == f"before\n{new}\nafter\n"
    with pytest.raises(VMError, match="exactly once"):  # a new source version moved it
        apply_source_edits(tmp_path)
    assert kernel_key("6.1.192-2") != kernel_key("6.1.192-3")


def test_default_image_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWARM_QEMU_IMAGE", raising=False)
    assert QemuOptions().image == "cloud"
    monkeypatch.setenv("SWARM_QEMU_IMAGE", "tiny")
    assert QemuOptions().image == "tiny"
    assert QemuOptions(image="cloud").image == "cloud"
    monkeypatch.setenv("SWARM_QEMU_IMAGE", "../bad")
    with pytest.raises(ConfigError, match=r"not an image name .* \(in SWARM_QEMU_IMAGE\)"):
        QemuOptions()


def test_command_line_has_no_network_unless_asked(tmp_path: Path) -> None:
    from swarm_engine.vm.qemu.accel import AccelChoice
    from swarm_engine.vm.qemu.image import Image

    image = Image("cloud", tmp_path, {"cmdline": "console=ttyS0"})
    base = MachineSpec(image, AccelChoice("tcg", "test"), "qemu", tmp_path / "s.sock", tsc_khz=1)
    argv = base.argv()
    assert "-netdev" not in argv and "-nodefaults" in argv
    assert "tsc_early_khz=1" in argv[argv.index("-append") + 1]
    # under TCG: no ASLR (translations are reused across processes), the TSC as the clock
    assert "norandmaps tsc=reliable" in base.cmdline()
    kvm = MachineSpec(image, AccelChoice("kvm", "test"), "qemu", tmp_path / "s.sock", tsc_khz=1)
    assert "norandmaps" not in kvm.cmdline() and "tsc=reliable" not in kvm.cmdline()
    net = MachineSpec(
        image, AccelChoice("tcg", "test"), "qemu", tmp_path / "s.sock",
        network=True, allowed_ports=(8080,),
    )  # fmt: skip
    netdev = net.argv()[net.argv().index("-netdev") + 1]
    assert "restrict=on" in netdev
    # one relay process per guest connection (a tcp: chardev would be one connection)
    # one relay process per guest connection (a tcp: chardev would be one connection), told
    # its VM's folder (its slots, its QEMU) and the per-VM limit
    assert "guestfwd=tcp:10.0.2.100:8080-cmd:" in netdev
    assert netdev.endswith(f"relay.py 8080 {tmp_path} {MAX_FORWARDED_CONNECTIONS}")
    comma = MachineSpec(
        image, AccelChoice("tcg", "test"), "qemu", tmp_path / "s.sock",
        network=True, allowed_ports=(8080,), folder=tmp_path / "a,b",
    )  # fmt: skip
    assert f"relay.py 8080 {tmp_path}/a,,b 16" in comma.argv()[comma.argv().index("-netdev") + 1]
    assert "hostfwd" not in netdev


async def test_agent_output_is_bounded_on_the_host(agent_vm: QemuVM) -> None:
    """The host keeps 64 KiB of each end of a stream, a cut marker and the true count."""
    streamed = 0

    def count(stream: str, chunk: bytes) -> None:
        nonlocal streamed
        streamed += len(chunk)

    res = await agent_vm.exec(
        "echo first; head -c 3000000 /dev/zero | tr '\\0' x; echo; echo last", on_output=count
    )
    total = len("first\n") + 3_000_000 + len("\nlast\n")
    assert res.ok and res.stdout_bytes == total == streamed and res.stdout_cut
    assert res.stdout.startswith(b"first\nxxx") and res.stdout.endswith(b"xxx\nlast\n")
    marker = b"\n[... %d bytes cut ...]\n" % (total - 2 * 64 * 1024)
    assert len(res.stdout) == 2 * 64 * 1024 + len(marker) and marker in res.stdout


async def test_agent_refuses_files_over_the_channel_cap(agent_vm: QemuVM, tmp_path: Path) -> None:
    """The guest says a file is too large instead of sending a frame the host would refuse
    (which would end the VM); the VM goes on."""
    with open(tmp_path / "workspace" / "big", "wb") as big:
        big.truncate(MAX_FILE + 1)
    with pytest.raises(VMError, match="larger than"):
        await agent_vm.get_file("big")
    assert await agent_vm.is_alive() and await agent_vm.ping() >= 0


def test_guest_and_host_agree_on_the_file_cap() -> None:
    source = (GUEST_DIR / "agent.c").read_text()
    match = re.search(r"#define MAX_PAYLOAD \((\d+)u \* 1024 \* 1024\)", source)
    assert match is not None and int(match.group(1)) * 1024 * 1024 == MAX_FILE


def test_image_build_needs_gcc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No fallback agent: without gcc the build stops at once and says what to install."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(VMError, match="apt-get install gcc libc6-dev"):
        build_image(BuildRequest(tmp_path / "images", force=True))
    assert not (tmp_path / "images" / ".cloud.new").exists()


def test_template_and_clone_command_lines_map_guest_ram(tmp_path: Path) -> None:
    """The template writes its guest RAM through to the file (share=on); a clone maps it
    private, copy-on-write (share=off) and waits for its device state over QMP."""
    from swarm_engine.vm.qemu.accel import AccelChoice
    from swarm_engine.vm.qemu.image import Image

    image = Image("tiny", tmp_path, {"cmdline": "console=ttyS0"})
    ram = tmp_path / "a,b" / "ram"
    common = (image, AccelChoice("tcg", "test"), "qemu", tmp_path / "s.sock")
    template = MachineSpec(*common, ram_file=ram, ram_shared=True, qmp_socket=tmp_path / "q")
    clone = MachineSpec(*common, ram_file=ram, incoming_qmp=tmp_path / "c.sock")
    for spec, share in ((template, "share=on"), (clone, "share=off")):
        argv = spec.argv()
        assert "memory-backend=ram" in argv[argv.index("-machine") + 1]
        backend = argv[argv.index("-object") + 1]
        assert backend.startswith("memory-backend-file,id=ram,size=512M,")
        assert f"mem-path={tmp_path}/a,,b/ram," in backend and backend.endswith(share)
        assert "tb-size=64" in argv[argv.index("-accel") + 1]
    assert clone.argv()[clone.argv().index("-incoming") + 1] == "defer"
    assert "-incoming" not in template.argv()
    plain = MachineSpec(*common).argv()
    assert "-object" not in plain and "memory-backend=ram" not in " ".join(plain)


def test_the_fence_kills_a_folders_qemu_only_for_the_row_of_that_vm(tmp_path: Path) -> None:
    """A `vms` row may name any folder of the run folder in `overlay_path`: the fence (a
    lease ran out) kills the QEMU there only when that folder is the row's own VM's,
    booted under its id or handed out under it from the warm pool."""
    from swarm_engine.vm.base import OrphanRecord
    from swarm_engine.vm.qemu.backend import SERVING_FILE, create

    backend = create(tmp_path, {"accel": "tcg"})
    procs: list[subprocess.Popen[bytes]] = []

    def vm_folder(name: str) -> Path:
        """A VM folder with a live stand-in for its QEMU (named like one, started for the
        folder's socket, as `is_our_qemu` checks)."""
        folder = backend.run_dir / name
        folder.mkdir(parents=True)
        sock = backend.socket_path(folder)
        proc = subprocess.Popen(
            ["bash", "-c", 'exec -a qemu-system-x86_64 "$0" -c "import time; time.sleep(300)"'
             ' "$1"', sys.executable, f"socket,id=agent,path={sock}"],
            start_new_session=True,
        )  # fmt: skip
        procs.append(proc)
        (folder / "qemu.pid").write_text(f"{proc.pid}\n")
        # (bash's own command line names it too: wait for the exec itself, argv[0])
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        wait_until(lambda: cmdline.read_bytes().split(b"\0")[0] == b"qemu-system-x86_64")
        return folder

    try:
        # (folder names of the backend's own shape: only those are its VM folders)
        victim, warm = vm_folder("vm-0123456789ab"), vm_folder("warm-0123456789ab")
        # another VM's folder, named by a hand-written row: not touched
        assert backend.fence(OrphanRecord("vm-fake", None, None, None, str(victim))) is None
        assert procs[0].poll() is None
        # a warm VM's folder serves the id it was handed out under, and no other
        (warm / SERVING_FILE).write_text("vm-served\n")
        assert backend.fence(OrphanRecord("vm-warm2", None, None, None, str(warm))) is None
        assert backend.fence(OrphanRecord("vm-served", None, None, None, str(warm))) == 1
        assert procs[1].wait(timeout=10) is not None
        # the row of the VM itself
        assert backend.fence(OrphanRecord(victim.name, None, None, None, str(victim))) == 1
        assert procs[0].wait(timeout=10) is not None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
