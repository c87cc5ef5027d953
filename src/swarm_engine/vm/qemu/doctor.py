"""`vm doctor`: what works on this host, in plain words."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from swarm_engine.errors import VMError
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.qemu.accel import probe_kvm
from swarm_engine.vm.qemu.builder import find_busybox
from swarm_engine.vm.qemu.config import default_image
from swarm_engine.vm.qemu.image import list_images

Level = Literal["ok", "warn", "fail", "info"]
BUILD_TOOLS = {
    "debootstrap": "debootstrap",
    "mksquashfs": "squashfs-tools",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
    "lz4": "lz4",
    "gcc": "gcc",  # the guest init and agent are static C programs
}
STATIC_LIBC = Path("/usr/lib/x86_64-linux-gnu/libc.a")


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    message: str


def unavailable(images_dir: Path, image: str | None = None,
                qemu_binary: str = "qemu-system-x86_64") -> str | None:  # fmt: skip
    """Why the qemu backend cannot boot `image` (default: $SWARM_QEMU_IMAGE, else
    `cloud`) here, in one line; None if it can."""
    image = image or default_image()
    if shutil.which(qemu_binary) is None:
        return f"{qemu_binary} is not installed"
    if not (images_dir / image / "manifest.json").is_file():
        return f"no qemu guest image {image!r} in {images_dir} (run scripts/build-images.sh)"
    return None


def _qemu_version(binary: str) -> str | None:
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = done.stdout.splitlines()[0] if done.stdout else ""
    return first.replace("QEMU emulator version", "").strip() or None


def run_checks(
    images_dir: Path, qemu_binary: str = "qemu-system-x86_64", booted: str | None = None
) -> list[Check]:
    """The host's checks; `booted` is the image the backend boots (default: as
    `unavailable`)."""
    booted = booted or default_image()
    checks: list[Check] = []
    path = shutil.which(qemu_binary)
    if path is None:
        checks.append(Check("qemu", "fail", f"{qemu_binary} is not installed "
                            "(apt-get install qemu-system-x86); the qemu backend cannot run"))  # fmt: skip
    else:
        checks.append(Check("qemu", "ok", f"{path} (version {_qemu_version(path) or '?'})"))
        works, why = probe_kvm(qemu_binary)
        if works:
            checks.append(Check("accel", "ok", "KVM works: VMs will use hardware virtualization"))
        else:
            checks.append(Check("accel", "warn", f"{why}. VMs will use TCG software emulation: "
                                "slower (seconds to boot) but fully working"))  # fmt: skip
    unreadable: list[str] = []
    images = list_images(images_dir, unreadable)
    for line in unreadable:  # (a failure when it is the image the backend boots)
        level: Level = "fail" if line.startswith(f"qemu image {booted!r}") else "warn"
        checks.append(Check("image", level, line))
    if not images and not unreadable:
        checks.append(Check("image", "fail", f"no guest image in {images_dir}; "
                            "build one with: swarm-engine vm image build"))  # fmt: skip
    for image in images:
        kernel = image.manifest.get("kernel_version", "?")
        size = image.size_bytes() / 1e6
        if image.stale:
            checks.append(Check(f"image {image.name}", "warn", "built from an older guest agent "
                                "recipe; rebuild: swarm-engine vm image build"))  # fmt: skip
        else:
            checks.append(Check(f"image {image.name}", "ok",
                                f"kernel {kernel}, {size:.0f} MB, built {image.manifest.get('built_at')}"))  # fmt: skip
    missing = [f"{tool} ({pkg})" for tool, pkg in BUILD_TOOLS.items() if shutil.which(tool) is None]
    try:
        find_busybox()
    except VMError:
        missing.append("static busybox (busybox-static)")
    if not STATIC_LIBC.is_file():
        missing.append("static libc (libc6-dev)")
    if missing:
        checks.append(
            Check("build tools", "warn", "cannot build images, missing: " + ", ".join(missing))
        )
    else:
        checks.append(Check("build tools", "ok", "everything `vm image build` needs is installed"))
    if os.geteuid() != 0:
        checks.append(Check("build tools", "info",
                            "building the root filesystem needs root (debootstrap, chroot)"))  # fmt: skip
    checks.append(Check("network", "info", "VMs have no network unless an agent asks for it; then "
                        "only its allowed host ports are reachable (at 10.0.2.100:<port>)"))  # fmt: skip
    return checks


async def boot_check(home: Path, options: Mapping[str, Any]) -> Check:
    """Boot one VM with the home's qemu `options` (those the engine's backend is made
    with: `vm.options.as_mapping`; its snapshot, run folder, accelerator and timeouts, not
    only its images), run a command in it and destroy it; report the timings."""
    from swarm_engine.vm.qemu.backend import create

    backend = create(home, dict(options))
    try:
        started = time.monotonic()
        vm = await backend.boot(f"doctor-{uuid.uuid4().hex[:8]}", VMSpec(timeout_seconds=60))
        boot_s = time.monotonic() - started
        try:
            res = await vm.exec(["python3", "-c", "print('hello from the guest')"])
            rtt = await vm.ping()
        finally:
            await vm.destroy()
    except VMError as exc:
        return Check("boot", "fail", f"a test VM did not work: {exc}")
    finally:
        await backend.close()
    if res.stdout.strip() != b"hello from the guest":
        return Check("boot", "fail", f"the guest answered {res.stdout!r} ({res.stderr!r})")
    accel, start = vm.info().extra.get("accel", "?"), vm.start
    how = "booted" if start == "boot" else f"restored from a {start} template"
    return Check("boot", "ok", f"{how} in {boot_s:.2f} s ({accel}); agent round trip "
                 f"{rtt * 1000:.1f} ms; Python runs in the guest")  # fmt: skip


def run_boot_check(home: Path, options: Mapping[str, Any]) -> Check:
    return asyncio.run(boot_check(home, options))
