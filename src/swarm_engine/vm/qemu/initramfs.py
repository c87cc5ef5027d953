"""Write a `newc` cpio archive (the initramfs format) without the cpio tool."""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    path: str
    """Path inside the archive, without a leading slash."""
    mode: int
    data: bytes = b""


def _header(ino: int, entry: Entry, name: bytes) -> bytes:
    fields = [ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, 0, 0, len(name) + 1, 0]
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def write_cpio(entries: Iterable[Entry], dest: Path) -> None:
    out = bytearray()
    seen: set[str] = set()
    items = list(entries)
    for entry in items:  # every parent folder must come first
        parts = entry.path.split("/")[:-1]
        for i in range(len(parts)):
            seen.add("/".join(parts[: i + 1]))
    dirs = sorted(seen - {e.path for e in items})
    ordered = [Entry(d, stat.S_IFDIR | 0o755) for d in dirs] + items
    for ino, entry in enumerate(ordered, start=1):
        name = entry.path.encode()
        head = _header(ino, entry, name) + name + b"\0"
        out += head + _pad(len(head)) + entry.data + _pad(len(entry.data))
    trailer = _header(0, Entry("TRAILER!!!", 0), b"TRAILER!!!") + b"TRAILER!!!\0"
    out += trailer + _pad(len(trailer))
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(bytes(out))
    tmp.replace(dest)


def file_entry(path: str, source: Path, mode: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | mode, source.read_bytes())
