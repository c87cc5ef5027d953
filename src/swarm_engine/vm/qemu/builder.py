"""Build a guest image from Debian packages: kernel, initramfs, Python root.

Steps (each skipped when its output is already there; the whole build is idempotent):
1. `apt-get download` the cloud kernel package, unpack it with `dpkg-deb -x`, cut the
   uncompressed `vmlinux` out of its bzImage and pick the virtio/squashfs/overlay modules.
2. `debootstrap --variant=minbase --include=python3 <suite>`, trimmed and packed as a
   read-only squashfs (cached under `<images_dir>/.build`, shared by every image).
3. An initramfs (written in Python, no cpio tool) with static busybox, the modules and
   the guest's /init and agent: `guest/init.c` and `guest/agent.c` compiled static with
   gcc (no shell script and no Python at boot; gcc and libc6-dev are required).
4. `manifest.json`, then the finished folder replaces `<images_dir>/<name>` atomically.

With `kernel="tiny"`, step 1 is `tinykernel.py` instead: a tinyconfig kernel built from
Debian's linux-source with everything built in, so the initramfs carries no modules.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from swarm_engine.errors import VMError
from swarm_engine.vm.qemu.image import (
    GUEST_DIR,
    INITRAMFS,
    KERNEL,
    MANIFEST,
    ROOTFS,
    Image,
    load_image,
    recipe_hash,
)
from swarm_engine.vm.qemu.initramfs import Entry, file_entry, write_cpio
from swarm_engine.vm.qemu.tinykernel import build_tiny_kernel
from swarm_engine.vm.qemu.tools import (
    DEBOOTSTRAP_LINES,
    ESTIMATES,
    Progress,
    Watch,
    elapsed,
    run_tool,
)
from swarm_engine.vm.qemu.vmlinux import extract_vmlinux_file

KernelKind = Literal["cloud", "tiny"]

KERNEL_META = "linux-image-cloud-amd64"
# Load order matters: dependencies first (there is no modprobe in the initramfs).
MODULES = ("virtio_ring", "virtio", "virtio_mmio", "virtio_console", "virtio_blk",
           "squashfs", "overlay")  # fmt: skip
NET_MODULES = ("failover", "net_failover", "virtio_net")
"""Loaded only by guests with network (`swarm.net=1` on the kernel command line)."""
SIG_MAGIC = b"~Module signature appended~\n"
GUEST_CFLAGS = ("-static", "-Os", "-s", "-pthread", "-Wall")
# cryptomgr.notests: the crypto self-tests alone cost ~0.6 s of a TCG boot.
CMDLINE = "console=ttyS0 quiet panic=-1 mitigations=off cryptomgr.notests rdinit=/init"
TINY_CMDLINE = "console=ttyS0 quiet panic=-1 rdinit=/init noapictimer no_timer_check reboot=triple"
"""The tiny kernel has no crypto self-tests and no mitigations to switch off. Without
ACPI it would calibrate the local APIC timer against the PIT and then verify it (~0.2 s
under TCG): `noapictimer` leaves the ticks to the PIT (through the IOAPIC; with more
than one vCPU the others get them as broadcast IPIs) and `no_timer_check` skips the
~20 ms check that the PIT's interrupt arrives. Without ACPI and a keyboard controller a
reset (the guest's end: its init's, a panic's) would try both first, ~3 s under TCG:
`reboot=triple` resets at once (QEMU, with `-no-reboot`, then exits)."""
TINY_MACHINE = "acpi=off,pit=on,pic=on"
"""The tiny kernel has no ACPI. Without ACPI tables QEMU's microvm lists the virtio-mmio
devices on the kernel command line (`virtio_mmio.device=...`) and qboot's MP table
describes the IOAPIC. The PIT and PIC stay on: with `noapictimer` (TINY_CMDLINE) the PIT
is the tick source, and with them off no timer ever fires."""
DEBOOTSTRAP_PATTERN = r"I: (Retrieving|Validating|Extracting|Unpacking|Configuring) "
ROOTFS_TRIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
               "var/cache/apt", "var/lib/apt/lists", "var/log")  # fmt: skip


@dataclass
class BuildRequest:
    images_dir: Path
    name: str = "cloud"
    kernel: KernelKind = "cloud"
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    force: bool = False
    progress: Progress = field(default=lambda _msg: None)


def strip_module_signature(data: bytes) -> bytes:
    """Drop the appended signature: checking it costs ~50 ms per module under TCG."""
    if not data.endswith(SIG_MAGIC):
        return data
    sig_len = struct.unpack(">I", data[-len(SIG_MAGIC) - 4 : -len(SIG_MAGIC)])[0]
    return data[: len(data) - len(SIG_MAGIC) - 12 - sig_len]


def _is_static_elf(path: Path) -> bool:
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        (p_type,) = struct.unpack_from("<I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP: needs a dynamic loader
            return False
    return True


def find_busybox() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.is_file() and _is_static_elf(path):
            return path
    raise VMError("a static busybox is needed (apt-get install busybox-static)")


def _fetch_kernel(work: Path, progress: Progress, log: Path) -> tuple[Path, str]:
    """Download (once) and unpack the cloud kernel; returns (unpacked root, version)."""
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    existing = sorted(debs.glob("linux-image-*-cloud-amd64_*.deb"))
    if not existing:
        progress(f"downloading {KERNEL_META} (~30 MB) ...")
        run_tool(["apt-get", "download", KERNEL_META], cwd=debs, log=log)
        meta = sorted(debs.glob(f"{KERNEL_META}_*.deb"))[-1]
        depends = run_tool(["dpkg-deb", "-f", str(meta), "Depends"], log=log)
        pkg = next(d.split()[0] for d in depends.split(",") if d.strip().startswith("linux-image"))
        run_tool(["apt-get", "download", pkg], cwd=debs, log=log,
                 watch=Watch(f"downloading {pkg}", progress))  # fmt: skip
        existing = sorted(debs.glob("linux-image-*-cloud-amd64_*.deb"))
    if not existing:
        raise VMError("apt-get download did not produce a cloud kernel package")
    deb = existing[-1]
    version = deb.name.split("_")[0].removeprefix("linux-image-")
    unpacked = work / "kernel" / version
    if not (unpacked / "boot").is_dir():
        progress(f"unpacking {deb.name}")
        tmp = unpacked.with_name(version + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        run_tool(["dpkg-deb", "-x", str(deb), str(tmp)], log=log,
                 watch=Watch(f"unpacking {deb.name}", progress))  # fmt: skip
        tmp.replace(unpacked)
    return unpacked, version


def _modules(unpacked: Path, version: str) -> list[Entry]:
    root = unpacked / "lib" / "modules" / version / "kernel"
    by_name = {p.name.removesuffix(".ko"): p for p in root.rglob("*.ko")}
    entries = []
    for name in (*MODULES, *NET_MODULES):
        path = by_name.get(name)
        if path is None:
            raise VMError(f"kernel {version} has no module {name}.ko")
        data = strip_module_signature(path.read_bytes())
        entries.append(Entry(f"modules/{name}.ko", stat.S_IFREG | 0o644, data))
    for listing, names in (("order", MODULES), ("order.net", NET_MODULES)):
        order = ("\n".join(names) + "\n").encode()
        entries.append(Entry(f"modules/{listing}", stat.S_IFREG | 0o644, order))
    return entries


def _rootfs(work: Path, req: BuildRequest, log: Path) -> Path:
    key = f"rootfs-{req.suite}-minbase-python3.squashfs"
    target = work / key
    if target.is_file():
        req.progress(f"root filesystem: reusing {target}")
        return target
    if os.geteuid() != 0:
        raise VMError("building the root filesystem needs root (debootstrap and chroot)")
    for tool in ("debootstrap", "mksquashfs"):
        if shutil.which(tool) is None:
            pkg = "squashfs-tools" if tool == "mksquashfs" else tool
            raise VMError(f"{tool} not found (apt-get install {pkg})")
    staging = work / "rootfs.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    req.progress(f"debootstrap {req.suite} (minbase + python3): 1 to 3 minutes, more on a slow"
                 " mirror ...")  # fmt: skip
    started = time.monotonic()
    run_tool(["debootstrap", "--variant=minbase", "--include=python3", req.suite, str(staging),
              req.mirror], log=log,
             watch=Watch("debootstrap", req.progress, DEBOOTSTRAP_PATTERN,
                         DEBOOTSTRAP_LINES))  # fmt: skip
    req.progress(f"debootstrap done in {elapsed(time.monotonic() - started)}; packing squashfs")
    for rel in ROOTFS_TRIM:
        shutil.rmtree(staging / rel, ignore_errors=True)
    (staging / "workspace").mkdir(exist_ok=True)
    (staging / "opt" / "swarm").mkdir(parents=True, exist_ok=True)
    (staging / "etc" / "hostname").write_text("swarm\n")
    tmp = target.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    run_tool(["mksquashfs", str(staging), str(tmp), "-comp", "lz4", "-noappend", "-quiet",
              "-no-progress"], log=log, watch=Watch("packing squashfs", req.progress))  # fmt: skip
    tmp.replace(target)
    shutil.rmtree(staging, ignore_errors=True)
    return target


def compile_guest(source: str, dest: Path) -> str | None:
    """Compile `guest/<source>` (C) into a static `dest`; None on success, else why not."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return "gcc not found (apt-get install gcc libc6-dev)"
    argv = [gcc, *GUEST_CFLAGS, "-o", str(dest), str(GUEST_DIR / source)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        return f"cannot run gcc: {exc.strerror}"
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-3:])
        return f"gcc failed (static libc is in libc6-dev): {tail}"
    return None


def compile_agent(dest: Path) -> str | None:
    """The C guest agent (`guest/agent.c`), static, at `dest`; None or why it failed."""
    return compile_guest("agent.c", dest)


def _guest_entries() -> list[Entry]:
    """/init and the guest agent for the initramfs: `init.c` and `agent.c`, compiled
    static (no shell and no Python at boot). There is no fallback: the C agent is the
    only one, so that one program is what the host's protocol checks are tested against."""
    with tempfile.TemporaryDirectory() as tmp:
        agent, init = Path(tmp) / "swarm-agent", Path(tmp) / "init"
        problem = compile_guest("agent.c", agent) or compile_guest("init.c", init)
        if problem is not None:
            raise VMError(f"cannot build the guest init and agent: {problem}")
        return [file_entry("init", init, 0o755), file_entry("swarm-agent", agent, 0o755)]


def build_image(req: BuildRequest) -> Image:
    """Build image `req.name` (or leave an up-to-date one alone); returns it."""
    recipe = recipe_hash(req.kernel)
    if not req.force:
        try:
            current = load_image(req.images_dir, req.name)
        except VMError:
            current = None
        if current is not None and current.manifest.get("recipe") == recipe:
            req.progress(f"image {req.name!r} is up to date ({current.path})")
            return current
    work = req.images_dir / ".build"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    started = time.monotonic()
    req.progress(f"building image {req.name!r} ({req.kernel} kernel): from nothing "
                 f"{ESTIMATES[req.kernel]}; steps done before are reused")  # fmt: skip
    guest_files = _guest_entries()  # first: a missing gcc stops the build at once
    out = req.images_dir / f".{req.name}.new"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    modules: list[Entry] = []
    req.progress(f"step 1 of 3: the {req.kernel} kernel")
    if req.kernel == "tiny":
        tiny = build_tiny_kernel(work, req.progress, log)
        shutil.copyfile(tiny.vmlinux, out / KERNEL)
        version, cmdline, machine = f"{tiny.release}-swarm-tiny", TINY_CMDLINE, TINY_MACHINE
    else:
        unpacked, version = _fetch_kernel(work, req.progress, log)
        bzimage = unpacked / "boot" / f"vmlinuz-{version}"
        req.progress(f"extracting vmlinux from {bzimage.name}")
        extract_vmlinux_file(bzimage, out / KERNEL)
        modules, cmdline, machine = _modules(unpacked, version), CMDLINE, ""
    req.progress("step 2 of 3: the root filesystem")
    rootfs = _rootfs(work, req, log)
    shutil.copyfile(rootfs, out / ROOTFS)
    count = sum(e.path.endswith(".ko") for e in modules)
    req.progress(f"step 3 of 3: the initramfs (busybox, {count} modules, init, guest agent)")
    entries = [file_entry("bin/busybox", find_busybox(), 0o755), *guest_files, *modules]
    write_cpio(entries, out / INITRAMFS)
    manifest = {
        "name": req.name,
        "kernel": req.kernel,
        "kernel_version": version,
        "suite": req.suite,
        "recipe": recipe,
        "cmdline": cmdline,
        **({"machine": machine} if machine else {}),
        "agent": "c",
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    final = req.images_dir / req.name
    old = req.images_dir / f".{req.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.replace(old)
    out.replace(final)
    shutil.rmtree(old, ignore_errors=True)
    req.progress(f"image {req.name!r} built in {elapsed(time.monotonic() - started)}: {final}")
    return load_image(req.images_dir, req.name)
