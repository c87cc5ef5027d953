"""QEMU microVM benchmarks: cold boot, snapshot restore, warm-pool acquire, exec round
trip, memory per VM, and boots with 1/5/10 VMs at once. States the accel mode.

    python benchmarks/qemu_vms.py [--runs N] [--image cloud|tiny] [--json out.json]

Needs qemu-system-x86_64 and a built image (swarm-engine vm image build); the image is
found like the engine finds it ($SWARM_QEMU_IMAGES, else <home>/images; the name from
--image, else $SWARM_QEMU_IMAGE, else `cloud`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import install_sigterm_handler, machine, percentile, temp_root

from swarm_engine.config import load_settings
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.qemu.backend import QemuBackend, create, images_dir_for
from swarm_engine.vm.qemu.config import default_image
from swarm_engine.vm.qemu.doctor import unavailable
from swarm_engine.vm.qemu.image import load_image
from swarm_engine.vm.qemu.vm import QemuVM


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stats(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "min": min(values),
        "max": max(values),
    }


async def timed_boot(backend: QemuBackend, spec: VMSpec | None = None) -> tuple[float, QemuVM]:
    started = time.perf_counter()
    vm = await backend.boot(f"bench-{uuid.uuid4().hex[:10]}", spec or VMSpec())
    return time.perf_counter() - started, vm


async def boots(backend: QemuBackend, runs: int) -> tuple[list[float], list[float]]:
    """(boot seconds, RSS MB after one exec) for `runs` sequential boots."""
    times, rss = [], []
    for _ in range(runs):
        took, vm = await timed_boot(backend)
        await vm.exec("true")
        rss.append(rss_mb(vm.pid))
        times.append(took)
        await vm.destroy()
    return times, rss


async def concurrent(backend: QemuBackend, count: int) -> dict[str, float]:
    started = time.perf_counter()
    results = await asyncio.gather(*(timed_boot(backend) for _ in range(count)))
    wall = time.perf_counter() - started
    for _, vm in results:
        await vm.destroy()
    each = [t for t, _ in results]
    return {"vms": count, "all_ready_s": wall, "p50_s": percentile(each, 50), "max_s": max(each)}


async def exec_round_trips(backend: QemuBackend, runs: int) -> dict[str, dict[str, float]]:
    _, vm = await timed_boot(backend)
    try:
        await vm.exec("true")  # first exec pays for translating the guest's fork/exec path
        ping = [await vm.ping() for _ in range(runs * 10)]
        exec_true = []
        for _ in range(runs * 10):  # enough for a p99
            started = time.perf_counter()
            await vm.exec(["true"])
            exec_true.append(time.perf_counter() - started)
        blob = b"x" * (1024 * 1024)
        started = time.perf_counter()
        await vm.put_file("blob", blob)
        await vm.get_file("blob")
        put_get = time.perf_counter() - started
    finally:
        await vm.destroy()
    return {
        "agent_ping_s": stats(ping),
        "exec_true_s": stats(exec_true),
        "put_get_1MiB_s": stats([put_get]),
    }


async def warm_acquire(home: Path, images: Path, runs: int) -> dict[str, float]:
    backend = create(home, {"images_dir": str(images), "warm": 1})
    times = []
    try:
        await backend.start()
        pool = backend.warm_pool
        assert pool is not None
        for _ in range(runs):
            await pool.wait_ready(timeout=120)
            took, vm = await timed_boot(backend)
            times.append(took)
            await vm.destroy()
    finally:
        await backend.close()
    return stats(times)


async def run(runs: int) -> dict[str, Any]:
    images = images_dir_for(load_settings().home)
    reason = unavailable(images)
    if reason:
        raise SystemExit(f"cannot benchmark: {reason}")
    image = load_image(images, default_image())
    results: dict[str, Any] = {
        "machine": machine(),
        "image": {"name": image.name, "kernel": image.manifest.get("kernel_version", "?")},
    }
    with temp_root("qemu") as root:
        cold = create(root / "cold", {"images_dir": str(images), "snapshot": False})
        # A fresh snapshot folder, so the template (boot + save) is measured too.
        snap_options = {"images_dir": str(images), "snapshot_dir": str(root / "snapshots")}
        snap = create(root / "snap", snap_options)
        try:
            accel = await cold.accel()
            results["accel"] = {"mode": accel.mode, "reason": accel.reason}
            print(f"accel: {accel.mode} ({accel.reason})", file=sys.stderr)
            steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                ("template_s", lambda: _template(snap)),
                ("cold_boot", lambda: boots(cold, max(3, runs // 2))),
                ("snapshot_restore", lambda: boots(snap, runs)),
                ("warm_acquire_s", lambda: warm_acquire(root / "warm", images, runs)),
                ("round_trips", lambda: exec_round_trips(snap, runs)),
            ]
            for name, step in steps:
                print(f"running {name} ...", file=sys.stderr)
                value = await step()
                if isinstance(value, tuple):
                    results[name] = {"boot_s": stats(value[0]), "rss_mb": stats(value[1])}
                else:
                    results[name] = value
            for label, backend in (("cold", cold), ("snapshot", snap)):
                for count in (1, 5, 10):
                    print(f"running {count} concurrent {label} boots ...", file=sys.stderr)
                    key = f"concurrent_{label}"
                    results.setdefault(key, []).append(await concurrent(backend, count))
        finally:
            await cold.close()
            await snap.close()
    return results


async def _template(backend: QemuBackend) -> float:
    started = time.perf_counter()
    await backend.snapshot_for(VMSpec())
    return time.perf_counter() - started


def markdown(r: dict[str, Any]) -> str:
    def ms(v: float) -> str:
        return f"{v * 1000:.0f} ms" if v >= 0.01 else f"{v * 1000:.2f} ms"

    m = r["machine"]
    lines = [
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory']}, kernel {m['kernel']}; "
        f"accel **{r['accel']['mode']}** ({r['accel']['reason']}); image "
        f"`{r['image']['name']}` (kernel {r['image']['kernel']}).",
        "",
        "| measure | p50 | p95 | p99 | n |",
        "|---|---|---|---|---|",
    ]
    rows = [
        ("cold boot to guest-ready (kernel boot)", r["cold_boot"]["boot_s"]),
        ("snapshot restore to agent answering", r["snapshot_restore"]["boot_s"]),
        ("warm-pool acquire", r["warm_acquire_s"]),
        ("agent ping round trip", r["round_trips"]["agent_ping_s"]),
        ("exec `true` round trip", r["round_trips"]["exec_true_s"]),
        ("put + get 1 MiB", r["round_trips"]["put_get_1MiB_s"]),
    ]
    for label, s in rows:
        lines.append(f"| {label} | {ms(s['p50'])} | {ms(s['p95'])} | {ms(s['p99'])} | {s['n']} |")
    lines += [
        "",
        f"Template (boot + save) once per image and spec: {r['template_s']:.1f} s.",
        f"QEMU RSS per VM after one exec: cold boot {r['cold_boot']['rss_mb']['p50']:.0f} MB, "
        f"snapshot restore {r['snapshot_restore']['rss_mb']['p50']:.0f} MB (512 MB guests).",
        "",
        "| VMs at once | cold: all ready | cold: p50 each | snapshot: all ready | "
        "snapshot: p50 each |",
        "|---|---|---|---|---|",
    ]
    for c, s in zip(r["concurrent_cold"], r["concurrent_snapshot"], strict=True):
        lines.append(
            f"| {c['vms']} | {c['all_ready_s']:.2f} s | {c['p50_s']:.2f} s | "
            f"{s['all_ready_s']:.2f} s | {s['p50_s']:.2f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--image", help="image name (default: $SWARM_QEMU_IMAGE, else cloud)")
    args = parser.parse_args()
    if args.image:
        os.environ["SWARM_QEMU_IMAGE"] = args.image  # every backend created here boots it
    install_sigterm_handler()
    results = asyncio.run(run(args.runs))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
