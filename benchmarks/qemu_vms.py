"""QEMU microVM benchmarks: cold boot, snapshot restore, warm-pool acquire, exec round
trip, memory per VM, and boots with 1/5/10 VMs at once. States the accel mode.

    python benchmarks/qemu_vms.py [--runs N] [--image cloud|tiny] [--json out.json]
        [--snapshot-memory mapped|copy|both]    restore from which kind of template
                                                (both: side by side, interleaved)
    python benchmarks/qemu_vms.py --density 50 --repeat 5
        N restored VMs at once, each running a command; failures, time and host memory

Host memory: PSS from /proc/<pid>/smaps_rollup (shared pages, such as a mapped template's
RAM file and QEMU's own code, are divided among the processes that map them) and the drop
in MemAvailable while the VMs are up. /proc/loadavg is recorded before and after.

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
from functools import partial
from pathlib import Path
from typing import Any

from _common import install_sigterm_handler, machine, percentile, temp_root

from swarm_engine.config import load_settings
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.qemu.backend import QemuBackend, create
from swarm_engine.vm.qemu.config import default_image
from swarm_engine.vm.qemu.doctor import unavailable
from swarm_engine.vm.qemu.folders import images_dir_for
from swarm_engine.vm.qemu.image import load_image
from swarm_engine.vm.qemu.vm import QemuVM


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def other_qemus(ours: set[int]) -> int:
    """QEMU processes on the host besides `ours`: they share QEMU's code and libraries
    with ours, so a VM measured "alone" is alone only if this is 0."""
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in ours:
            try:
                count += (entry / "comm").read_text().startswith("qemu-system")
            except OSError:
                continue
    return count


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


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


async def held(backend: QemuBackend, count: int, settle: float = 2.0) -> dict[str, Any]:
    """`count` restored VMs up at once, each after one command, then idle for `settle`
    seconds: host memory per VM (PSS, RSS) and the drop in MemAvailable."""
    before = mem_available_mb()
    vms: list[QemuVM] = []
    try:
        for _ in range(count):  # one at a time: memory, not start-up contention, is measured
            vms.append((await timed_boot(backend))[1])
            await vms[-1].exec("true")
        await asyncio.sleep(settle)
        pss = [pss_mb(vm.pid) for vm in vms]
        rss = [rss_mb(vm.pid) for vm in vms]
        drop = before - mem_available_mb()
        others = other_qemus({vm.pid for vm in vms})
    finally:
        for vm in vms:
            await vm.destroy()
    return {
        "vms": count,
        "pss_mb": stats(pss),
        "pss_mb_sum": sum(pss),
        "rss_mb": stats(rss),
        "memavailable_drop_mb": drop,
        "other_qemus": others,
        "start": vms[0].start if vms else "?",
    }


async def density(backend: QemuBackend, count: int) -> dict[str, Any]:
    """`count` VMs booted at once, each running a command; all must be ready and answer."""
    load_before, before = loadavg(), mem_available_mb()
    started = time.perf_counter()

    async def one(i: int) -> QemuVM:
        vm = await backend.boot(f"dense-{i}-{uuid.uuid4().hex[:8]}", VMSpec())
        try:
            res = await vm.exec(f"echo vm-{i}")
            if res.stdout != f"vm-{i}\n".encode():
                raise RuntimeError(f"vm {i} answered {res.stdout!r} {res.stderr!r}")
        except BaseException:
            await vm.destroy()
            raise
        return vm

    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    all_done = time.perf_counter() - started
    vms = [r for r in results if isinstance(r, QemuVM)]
    errors = [repr(r)[:300] for r in results if not isinstance(r, QemuVM)]
    pss = [pss_mb(vm.pid) for vm in vms]
    drop = before - mem_available_mb()
    for vm in vms:
        await vm.destroy()
    return {
        "vms": count,
        "ok": len(vms),
        "failures": len(errors),
        "errors": errors[:5],
        "all_ran_s": all_done,
        "pss_mb_sum": sum(pss),
        "pss_mb_each": stats(pss) if pss else {},
        "memavailable_drop_mb": drop,
        "load_before": load_before,
        "load_after": loadavg(),
        "start": vms[0].start if vms else "?",
    }


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


async def run(runs: int, modes: list[str]) -> dict[str, Any]:
    images = images_dir_for(load_settings().home)
    reason = unavailable(images)
    if reason:
        raise SystemExit(f"cannot benchmark: {reason}")
    image = load_image(images, default_image())
    results: dict[str, Any] = {
        "machine": machine(),
        "image": {"name": image.name, "kernel": image.manifest.get("kernel_version", "?")},
        "load_before": loadavg(),
    }
    with temp_root("qemu") as root:
        cold = create(root / "cold", {"images_dir": str(images), "snapshot": False})
        snaps: dict[str, QemuBackend] = {}
        for mode in modes:
            # A fresh snapshot folder, so the template (boot + save) is measured too.
            snaps[mode] = create(
                root / f"snap-{mode}",
                {
                    "images_dir": str(images),
                    "snapshot_dir": str(root / f"snapshots-{mode}"),
                    "snapshot_memory": mode,
                },
            )
        snap = snaps[modes[0]]
        try:
            accel = await cold.accel()
            results["accel"] = {"mode": accel.mode, "reason": accel.reason}
            print(f"accel: {accel.mode} ({accel.reason})", file=sys.stderr)
            steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                ("cold_boot", lambda: boots(cold, max(3, runs // 2))),
                ("warm_acquire_s", lambda: warm_acquire(root / "warm", images, runs)),
                ("round_trips", lambda: exec_round_trips(snap, runs)),
            ]
            for mode, backend in snaps.items():
                steps.insert(0, (f"template_s/{mode}", partial(_template, backend)))
            for rep in range(2):  # the restore kinds interleaved, twice
                for mode, backend in snaps.items():
                    steps.append((f"snapshot_restore/{mode}/{rep}", partial(boots, backend, runs)))
                    for count in (1, 10):
                        steps.append((f"held/{mode}/{count}/{rep}", partial(held, backend, count)))
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
            for backend in snaps.values():
                await backend.close()
    results["load_after"] = loadavg()
    results["modes"] = modes
    return results


async def run_density(count: int, repeat: int, mode: str) -> dict[str, Any]:
    images = images_dir_for(load_settings().home)
    reason = unavailable(images)
    if reason:
        raise SystemExit(f"cannot benchmark: {reason}")
    image = load_image(images, default_image())
    results: dict[str, Any] = {
        "machine": machine(),
        "image": {"name": image.name, "kernel": image.manifest.get("kernel_version", "?")},
        "mode": mode,
        "reps": [],
    }
    with temp_root("qemu-density") as root:
        options = {
            "images_dir": str(images),
            "snapshot_dir": str(root / "snapshots"),
            "snapshot_memory": mode,
        }
        backend = create(root / "home", options)
        try:
            results["accel"] = (await backend.accel()).mode
            results["template_s"] = await _template(backend)
            for rep in range(repeat):
                print(f"density {count}, repetition {rep + 1} of {repeat} ...", file=sys.stderr)
                outcome = await density(backend, count)
                print(json.dumps({k: v for k, v in outcome.items() if k != "pss_mb_each"}),
                      file=sys.stderr)  # fmt: skip
                results["reps"].append(outcome)
        finally:
            await backend.close()
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
        f"`{r['image']['name']}` (kernel {r['image']['kernel']}); load "
        f"{r['load_before']:.2f} before, {r['load_after']:.2f} after.",
        "",
        "| measure | p50 | p95 | p99 | n |",
        "|---|---|---|---|---|",
    ]
    rows = [("cold boot to guest-ready (kernel boot)", r["cold_boot"]["boot_s"])]
    for rep in range(2):
        for mode in r["modes"]:
            restore = r[f"snapshot_restore/{mode}/{rep}"]["boot_s"]
            rows.append((f"restore from a {mode} template (run {rep + 1})", restore))
    rows += [
        ("warm-pool acquire", r["warm_acquire_s"]),
        ("agent ping round trip", r["round_trips"]["agent_ping_s"]),
        ("exec `true` round trip", r["round_trips"]["exec_true_s"]),
        ("put + get 1 MiB", r["round_trips"]["put_get_1MiB_s"]),
    ]
    for label, s in rows:
        lines.append(f"| {label} | {ms(s['p50'])} | {ms(s['p95'])} | {ms(s['p99'])} | {s['n']} |")
    templates = ", ".join(f"{mode} {r[f'template_s/{mode}']:.1f} s" for mode in r["modes"])
    lines += [
        "",
        f"Template (boot + save) once per image and spec: {templates}.",
        f"QEMU RSS per VM after one exec, alone: cold boot "
        f"{r['cold_boot']['rss_mb']['p50']:.0f} MB (512 MB guests).",
        "",
        "| template | VMs held, idle | PSS per VM p50 (max) | PSS sum | MemAvailable drop "
        "| RSS per VM p50 | other QEMUs on the host |",
        "|---|---|---|---|---|---|---|",
    ]
    for rep in range(2):
        for mode in r["modes"]:
            for count in (1, 10):
                h = r[f"held/{mode}/{count}/{rep}"]
                lines.append(
                    f"| {mode} (run {rep + 1}) | {count} | {h['pss_mb']['p50']:.1f} MB "
                    f"({h['pss_mb']['max']:.1f}) | {h['pss_mb_sum']:.0f} MB | "
                    f"{h['memavailable_drop_mb']:.0f} MB | {h['rss_mb']['p50']:.0f} MB | "
                    f"{h.get('other_qemus', '?')} |"
                )
    lines += [
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


def density_markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory']}, kernel {m['kernel']}; "
        f"accel {r['accel']}; image `{r['image']['name']}`; {r['mode']} template "
        f"(made in {r['template_s']:.1f} s).",
        "",
        "| rep | VMs | ok | failures | all ran | PSS sum | PSS per VM p50 | MemAvailable drop "
        "| load before → after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, d in enumerate(r["reps"], 1):
        each = d["pss_mb_each"].get("p50", float("nan"))
        lines.append(
            f"| {i} | {d['vms']} | {d['ok']} | {d['failures']} | {d['all_ran_s']:.2f} s | "
            f"{d['pss_mb_sum']:.0f} MB | {each:.1f} MB | {d['memavailable_drop_mb']:.0f} MB | "
            f"{d['load_before']:.2f} → {d['load_after']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--image", help="image name (default: $SWARM_QEMU_IMAGE, else cloud)")
    parser.add_argument("--snapshot-memory", choices=["mapped", "copy", "both"], default="both")
    parser.add_argument("--density", type=int, help="only this many VMs at once, --repeat times")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.image:
        os.environ["SWARM_QEMU_IMAGE"] = args.image  # every backend created here boots it
    install_sigterm_handler()
    modes = ["mapped", "copy"] if args.snapshot_memory == "both" else [args.snapshot_memory]
    results: dict[str, Any]
    if args.density:
        results = asyncio.run(run_density(args.density, args.repeat, modes[0]))
        text = density_markdown(results)
    else:
        results = asyncio.run(run(args.runs, modes))
        text = markdown(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
