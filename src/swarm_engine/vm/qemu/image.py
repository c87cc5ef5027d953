"""Guest images on disk: `<images_dir>/<name>/` holds `vmlinux`, `initramfs.cpio`,
`rootfs.squashfs` and `manifest.json`. Building them is `builder.py`'s job."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm_engine.errors import VMError
from swarm_engine.models import IMAGE_RE

KERNEL = "vmlinux"
INITRAMFS = "initramfs.cpio"
ROOTFS = "rootfs.squashfs"
MANIFEST = "manifest.json"
FILES = (KERNEL, INITRAMFS, ROOTFS)
GUEST_DIR = Path(__file__).parent / "guest"
RECIPE_FILES = (
    Path(__file__).parent / "builder.py",
    Path(__file__).parent / "initramfs.py",
    GUEST_DIR / "agent.c",
    GUEST_DIR / "init.c",
)
TINY_RECIPE_FILES = (Path(__file__).parent / "tinykernel.py", Path(__file__).parent / "tiny.config")
"""Only the tiny image depends on these (the cloud image's recipe ignores them)."""


def recipe_hash(kernel: str) -> str:
    """A hash of everything that decides an image's content (except the Debian mirror)."""
    h = hashlib.sha256(kernel.encode())
    for path in (*RECIPE_FILES, *(TINY_RECIPE_FILES if kernel == "tiny" else ())):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Image:
    name: str
    path: Path
    manifest: dict[str, Any]

    @property
    def kernel(self) -> Path:
        return self.path / KERNEL

    @property
    def initramfs(self) -> Path:
        return self.path / INITRAMFS

    @property
    def rootfs(self) -> Path:
        return self.path / ROOTFS

    @property
    def cmdline_extra(self) -> str:
        return str(self.manifest.get("cmdline", ""))

    @property
    def machine_extra(self) -> str:
        """Extra `-machine microvm` options the kernel needs (the tiny kernel: `acpi=off`,
        so QEMU lists the virtio-mmio devices on the kernel command line)."""
        return str(self.manifest.get("machine", ""))

    @property
    def stale(self) -> bool:
        """True when the guest agent or init changed since the image was built."""
        kernel = str(self.manifest.get("kernel", "cloud"))
        return self.manifest.get("recipe") != recipe_hash(kernel)

    def size_bytes(self) -> int:
        return sum((self.path / f).stat().st_size for f in FILES if (self.path / f).exists())


def image_identity(path: Path, *, inodes: bool = True) -> tuple[int, ...]:
    """Who the image's files are now: (inode,) size and mtime of the manifest and each
    file, -1s for a missing one. Cheap enough to check before every boot."""
    found: list[int] = []
    for name in (MANIFEST, *FILES):
        try:
            st = os.stat(path / name)
        except OSError:
            found += [-1, -1, -1] if inodes else [-1, -1]
            continue
        found += [st.st_ino, st.st_size, st.st_mtime_ns] if inodes else [st.st_size, st.st_mtime_ns]
    return tuple(found)


MANIFEST_BYTES = 64 * 1024
"""The most a manifest holds (what the builder writes is a few hundred bytes)."""
MANIFEST_TEXT = ("cmdline", "machine", "kernel", "kernel_version", "recipe", "built_at")
"""The manifest's keys that are text when given (`cmdline` and `machine` go on QEMU's
command line as they are)."""


MANIFEST_NEEDED = ("cmdline", "built_at")
"""Keys every manifest `vm image build` writes has, and a boot needs (`{}` booted the
default command line and failed 11 s later)."""
MAX_CMDLINE_BYTES = 1024
"""The longest `cmdline` taken: x86's kernel command line holds 2048 bytes, and the
backend adds its own (a 60 KB one panicked the guest at boot)."""


def manifest_problem(manifest: object) -> str | None:
    """Why `manifest` (a manifest.json as read) is not one the backend can boot from, in a
    few words, or None: it is a JSON object whose `MANIFEST_TEXT` keys are text (a file
    holding `[]` failed the boot as `'list' object has no attribute 'get'`, and a number
    as `cmdline` reached QEMU's command line)."""
    if not isinstance(manifest, dict):
        kind = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}
        return f"not a JSON object ({kind.get(type(manifest), 'a number')})"
    for key in MANIFEST_NEEDED:
        value = manifest.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):  # (or `""`)
            return f"no {key} (not a manifest `vm image build` wrote)"
    cmdline = manifest.get("cmdline")
    if isinstance(cmdline, str) and len(cmdline.encode("utf-8", "replace")) > MAX_CMDLINE_BYTES:
        return f"cmdline is longer than {MAX_CMDLINE_BYTES} bytes (the kernel takes 2048 in all)"
    for key in MANIFEST_TEXT:
        value = manifest.get(key)
        if value is not None and not isinstance(value, str):
            return f"{key} is not text"
        if isinstance(value, str) and ("\x00" in value or "\n" in value):
            return f"{key} holds a NUL or a line break"
    return None


def load_image(images_dir: Path, name: str) -> Image:
    if not IMAGE_RE.fullmatch(name):  # a row written by hand may hold anything
        raise VMError(f"qemu image {name!r}: not an image name (images are looked up by name)")
    path = images_dir / name
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise VMError(
            f"qemu image {name!r} is not built (looked in {path}); run: swarm-engine vm image build"
        )
    try:
        with open(manifest_path, "rb") as file:
            data = file.read(MANIFEST_BYTES + 1)
        if len(data) > MANIFEST_BYTES:
            raise ValueError(f"more than {MANIFEST_BYTES // 1024} KiB")
        manifest = json.loads(data)
    except (OSError, ValueError, RecursionError) as exc:
        raise VMError(f"qemu image {name!r}: unreadable manifest: {exc}") from exc
    problem = manifest_problem(manifest)
    if problem is not None:
        raise VMError(f"qemu image {name!r}: unreadable manifest: {problem}")
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise VMError(
            f"qemu image {name!r} is incomplete (missing {', '.join(missing)}); rebuild it"
        )
    return Image(name, path, manifest)


def list_images(images_dir: Path, unreadable: list[str] | None = None) -> list[Image]:
    """The images under `images_dir` that load; the line of each that does not (an
    unreadable manifest, a missing file) is added to `unreadable` when given."""
    if not images_dir.is_dir():
        return []
    found = []
    for entry in sorted(images_dir.iterdir()):
        if entry.is_dir() and (entry / MANIFEST).is_file():
            try:
                found.append(load_image(images_dir, entry.name))
            except VMError as exc:
                if unreadable is not None:
                    unreadable.append(str(exc))
    return found
