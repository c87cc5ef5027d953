"""Exec cost of two builds of one image, side by side: for each images folder in turn
(alternating, `--pairs` times), a fresh VM runs 100 `exec(["true"])` through the guest
agent (round trip p50, ms) and, inside the guest, 200 `subprocess.run(["/bin/true"])`
(fork and exec alone, no agent: mean ms each). Used to price a change to the guest (its
agent or kernel) against the build before it.

    python benchmarks/qemu_exec_pairs.py OLD_IMAGES_DIR NEW_IMAGES_DIR [--image tiny]
        [--pairs 2] [--memory-mb 256]

Each folder is an images folder as `vm image build` makes it (`<dir>/<image>/...`).
/proc/loadavg is printed with each line: on a shared host compare within a pair.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.qemu.backend import create

IN_GUEST = (
    "import subprocess, time\n"
    "t = time.monotonic()\n"
    "for _ in range(200): subprocess.run(['/bin/true'])\n"
    "print((time.monotonic() - t) / 200 * 1000)\n"
)


async def measure(images: Path, image: str, memory_mb: int, home: Path) -> tuple[float, float]:
    """(agent exec p50 ms, in-guest fork + exec mean ms) on one fresh VM."""
    backend = create(home, {"images_dir": str(images), "image": image})
    try:
        vm = await backend.boot(f"vm-{uuid.uuid4().hex[:12]}", VMSpec(memory_mb=memory_mb))
        try:
            inside = await vm.exec(["python3", "-c", IN_GUEST])
            times = []
            for _ in range(100):
                started = time.monotonic()
                await vm.exec(["true"])
                times.append((time.monotonic() - started) * 1000)
            return statistics.median(times), float(inside.stdout)
        finally:
            await vm.destroy()
    finally:
        await backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--image", default="tiny")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--memory-mb", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swarm-bench-exec-") as tmp:
        for pair in range(1, args.pairs + 1):
            for label, images in (("old", args.old), ("new", args.new)):
                home = Path(tmp) / f"{label}-{pair}"
                home.mkdir()
                p50, inside = asyncio.run(measure(images, args.image, args.memory_mb, home))
                load = Path("/proc/loadavg").read_text().split()[0]
                print(f"pair {pair} {label}: agent exec p50 {p50:.2f} ms, "
                      f"in-guest fork+exec {inside:.2f} ms, load {load}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
