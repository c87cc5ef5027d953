"""Cut the uncompressed kernel (ELF `vmlinux`) out of a compressed `bzImage`.

Our own version of the kernel's `scripts/extract-vmlinux`: find each known compression
magic in the file, try to decompress from there, keep the first result that is an ELF.
`-machine microvm` boots an ELF directly through its PVH note, skipping the slow
in-guest decompression.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from swarm_engine.errors import VMError

ELF_MAGIC = b"\x7fELF"


def _gzip(data: bytes) -> bytes:
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    return d.decompress(data)


def _xz(data: bytes) -> bytes:
    d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    return d.decompress(data)


def _lzma(data: bytes) -> bytes:
    d = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE)
    return d.decompress(data)


def _tool(*argv: str) -> Callable[[bytes], bytes]:
    def run(data: bytes) -> bytes:
        if shutil.which(argv[0]) is None:
            raise VMError(f"{argv[0]} is needed to unpack this kernel (apt-get install {argv[0]})")
        # These tools exit non-zero on the trailing garbage after the stream; keep the output.
        proc = subprocess.run(argv, input=data, capture_output=True, check=False)
        return proc.stdout

    return run


# magic -> decompressor, in the order extract-vmlinux tries them.
_FORMATS: list[tuple[str, bytes, Callable[[bytes], bytes]]] = [
    ("gzip", b"\x1f\x8b\x08", _gzip),
    ("xz", b"\xfd7zXZ\x00", _xz),
    ("lzma", b"\x5d\x00\x00\x00", _lzma),
    ("lz4", b"\x02\x21\x4c\x18", _tool("lz4", "-dc")),
    ("zstd", b"\x28\xb5\x2f\xfd", _tool("zstd", "-dc")),
]


def _offsets(data: bytes, magic: bytes) -> Iterator[int]:
    start = data.find(magic)
    while start != -1:
        yield start
        start = data.find(magic, start + 1)


def extract_vmlinux(bzimage: bytes) -> bytes:
    """Return the ELF kernel inside `bzimage` (or `bzimage` itself if it is an ELF)."""
    if bzimage.startswith(ELF_MAGIC):
        return bzimage
    for _name, magic, decompress in _FORMATS:
        for offset in _offsets(bzimage, magic):
            try:
                out = decompress(bzimage[offset:])
            except (OSError, EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile):
                continue
            if out.startswith(ELF_MAGIC):
                return out
    raise VMError("no ELF kernel found inside the bzImage (unknown compression?)")


def extract_vmlinux_file(src: Path, dest: Path) -> None:
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(extract_vmlinux(src.read_bytes()))
    tmp.replace(dest)
