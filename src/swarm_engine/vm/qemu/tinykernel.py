"""The tiny guest kernel (`vm image build --kernel tiny`): Debian's `linux-source-6.1`,
`make tinyconfig`, then the options in `tiny.config` (virtio-mmio, serial console,
squashfs, overlayfs, cgroups, ...; everything built in, no modules, no PCI, no ACPI),
plus the small source edits in `SOURCE_EDITS` (boot time under TCG).

Nothing is installed: `apt-get download` + `dpkg-deb -x` like the cloud kernel. The
uncompressed `vmlinux` and its `.config` are cached in `<build>/tiny-kernel/<key>/`, keyed
on the fragment and the source package version; the source tree (~1.3 GB) is deleted
after a successful build. Compiling takes 4 to 10 minutes on 2 cores (`nice -n 10`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from swarm_engine.errors import VMError
from swarm_engine.vm.qemu.tools import KBUILD_LINES, Progress, Watch, elapsed, run_tool

SOURCE_PKG = "linux-source-6.1"
KBUILD_PATTERN = r"  [A-Z][A-Z0-9_]* "
"""A kbuild progress line, e.g. `  CC      init/main.o`."""
FRAGMENT = Path(__file__).parent / "tiny.config"
# tool -> the Debian package that provides it
BUILD_TOOLS = {"gcc": "gcc", "make": "make", "flex": "flex", "bison": "bison", "bc": "bc",
               "xz": "xz-utils", "tar": "tar", "perl": "perl"}  # fmt: skip
BUILD_HEADERS = {"/usr/include/gelf.h": "libelf-dev"}
"""objtool (ORC unwinder) links against libelf."""
SOURCE_EDITS = (
    # free_init_pages() fills the freed __init sections with 0xcc before freeing them.
    # Under TCG those pages hold code that ran at boot, so every 8-byte store of that
    # fill takes QEMU's self-modifying-code slow path: 0.23 s for 700 KB, a quarter of
    # the boot. The fill only helps catch stray jumps into freed init code.
    ("arch/x86/mm/init.c", "(void *)end,\n\t\t\t\t   POISON_FREE_INITMEM, what);",
     "(void *)end,\n\t\t\t\t   -1, what);"),
)  # fmt: skip
"""(file, old, new): exact edits applied to the kernel source before building."""


@dataclass(frozen=True)
class TinyKernel:
    vmlinux: Path
    release: str
    """`make kernelrelease`, e.g. 6.1.192."""
    source_version: str
    """The Debian package version of linux-source, e.g. 6.1.192-2."""


def fragment_options() -> dict[str, bool]:
    """`CONFIG_X` -> wanted on/off, from `tiny.config`."""
    options: dict[str, bool] = {}
    for raw in FRAGMENT.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, value = line.partition("=")
        if value not in ("y", "n"):
            raise VMError(f"tiny.config: only =y and =n are supported: {raw!r}")
        options[name] = value == "y"
    return options


def missing_tools() -> list[str]:
    """Debian packages the tiny kernel build needs and this host lacks."""
    packages = {pkg for tool, pkg in BUILD_TOOLS.items() if shutil.which(tool) is None}
    packages |= {pkg for path, pkg in BUILD_HEADERS.items() if not Path(path).is_file()}
    return sorted(packages)


def config_problems(config_text: str, wanted: dict[str, bool]) -> list[str]:
    """Options of the fragment that did not end up as asked in the final `.config`."""
    have: dict[str, bool] = {}
    for line in config_text.splitlines():
        if line.startswith("CONFIG_"):
            name, _, value = line.partition("=")
            have[name] = value in ("y", "m")
    return [f"{name}={'y' if on else 'n'}" for name, on in wanted.items()
            if have.get(name, False) != on]  # fmt: skip


def _fetch_source(work: Path, progress: Progress, log: Path) -> tuple[Path, str]:
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    existing = sorted(debs.glob(f"{SOURCE_PKG}_*.deb"))
    if not existing:
        progress(f"downloading {SOURCE_PKG} (~140 MB) ...")
        run_tool(["apt-get", "download", SOURCE_PKG], cwd=debs, log=log,
                 watch=Watch(f"downloading {SOURCE_PKG}", progress))  # fmt: skip
        existing = sorted(debs.glob(f"{SOURCE_PKG}_*.deb"))
    if not existing:
        raise VMError(f"apt-get download did not produce {SOURCE_PKG}")
    deb = existing[-1]
    return deb, deb.name.split("_")[1]


def kernel_key(source_version: str) -> str:
    h = hashlib.sha256(f"{SOURCE_PKG}={source_version}\0".encode())
    h.update(FRAGMENT.read_bytes())
    for edit in SOURCE_EDITS:
        h.update("\0".join(edit).encode() + b"\0")
    return h.hexdigest()[:16]


def apply_source_edits(src: Path) -> None:
    """Apply `SOURCE_EDITS` to the unpacked tree; each `old` must occur exactly once."""
    for rel, old, new in SOURCE_EDITS:
        path = src / rel
        text = path.read_text()
        if text.count(old) != 1:
            raise VMError(f"kernel source edit: {rel} does not contain {old!r} exactly once")
        path.write_text(text.replace(old, new))


def build_tiny_kernel(work: Path, progress: Progress, log: Path) -> TinyKernel:
    """The tiny `vmlinux`, built once per (fragment, source version) and cached."""
    deb, source_version = _fetch_source(work, progress, log)
    cache = work / "tiny-kernel" / kernel_key(source_version)
    if (cache / "vmlinux").is_file() and (cache / "release").is_file():
        progress(f"tiny kernel: reusing {cache}")
        release = (cache / "release").read_text().strip()
        return TinyKernel(cache / "vmlinux", release, source_version)
    lacking = missing_tools()
    if lacking:
        raise VMError(f"building the tiny kernel needs: apt-get install {' '.join(lacking)}")
    tree = cache.with_name(cache.name + ".src")
    shutil.rmtree(tree, ignore_errors=True)
    unpacked = tree / "deb"
    unpacked.mkdir(parents=True)
    progress(f"unpacking {deb.name} (~1.3 GB of source; up to 2 minutes)")
    run_tool(["dpkg-deb", "-x", str(deb), str(unpacked)], log=log,
             watch=Watch(f"unpacking {deb.name}", progress))  # fmt: skip
    tarball = next((unpacked / "usr" / "src").glob(f"{SOURCE_PKG}.tar.*"), None)
    if tarball is None:
        raise VMError(f"{deb.name} holds no usr/src/{SOURCE_PKG}.tar.*")
    src = tree / "linux"
    src.mkdir()
    run_tool(["tar", "-xf", str(tarball), "-C", str(src), "--strip-components=1"], log=log,
             watch=Watch(f"unpacking {tarball.name}", progress))  # fmt: skip
    shutil.rmtree(unpacked)
    apply_source_edits(src)
    wanted = fragment_options()
    run_tool(["make", "-s", "tinyconfig"], cwd=src, log=log)
    edits = [
        arg for name, on in wanted.items() for arg in ("--enable" if on else "--disable", name)
    ]
    run_tool(["scripts/config", "--file", ".config", *edits], cwd=src, log=log)
    run_tool(["make", "-s", "olddefconfig"], cwd=src, log=log)
    problems = config_problems((src / ".config").read_text(), wanted)
    if problems:
        raise VMError(f"tiny.config: not in the final .config: {', '.join(problems)}")
    jobs = str(os.cpu_count() or 1)
    progress(f"compiling the tiny kernel (make -j{jobs} vmlinux): 4 to 10 minutes on 2 cores ...")
    started = time.monotonic()
    run_tool(["nice", "-n", "10", "make", f"-j{jobs}", "vmlinux"], cwd=src, log=log,
             watch=Watch("compiling the tiny kernel", progress, KBUILD_PATTERN,
                         KBUILD_LINES))  # fmt: skip
    release = run_tool(["make", "-s", "kernelrelease"], cwd=src, log=log).strip()
    progress(f"tiny kernel {release} compiled in {elapsed(time.monotonic() - started)}")
    staging = cache.with_name(cache.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copyfile(src / "vmlinux", staging / "vmlinux")
    shutil.copyfile(src / ".config", staging / "config")
    (staging / "release").write_text(release + "\n")
    shutil.rmtree(cache, ignore_errors=True)
    staging.replace(cache)
    shutil.rmtree(tree, ignore_errors=True)
    return TinyKernel(cache / "vmlinux", release, source_version)
