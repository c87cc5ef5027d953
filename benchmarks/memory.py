"""Daemon memory: resident set size idle after start, and its peak under load.

Starts `start --foreground --max-vms 16` on a fresh home and samples the daemon's
/proc/<pid>/status from outside: VmRSS while idle, then every 10 ms while N echo tickets
(inserted at once by an outside writer) run, then again once idle. VmHWM (the kernel's
own peak RSS for the process) is read at the end. Only the daemon process is counted,
not the sandboxes it starts (they are separate processes that exit with their step).

Usage: python benchmarks/memory.py [-n 200] [--max-vms 16] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from _common import (
    engine_log,
    init_home,
    insert_tickets,
    install_sigterm_handler,
    load1,
    print_machine,
    query,
    running_engine,
    temp_root,
    wait_registered,
    write_json,
)

SAMPLE_EVERY = 0.01


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid` in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def sample_for(pid: int, seconds: float) -> list[int]:
    samples: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(status_kb(pid)["VmRSS"])
        time.sleep(SAMPLE_EVERY)  # sleep-ok: sampling period
    return samples


def run(n: int, max_vms: int, idle_seconds: float) -> dict[str, Any]:
    with temp_root("memory") as root:
        home = root / "home"
        db = init_home(home)
        with running_engine(home, "--max-vms", str(max_vms)) as proc:
            try:
                wait_registered(db, proc)
                time.sleep(0.5)  # sleep-ok: let start-up work (cleanup, first heartbeat) finish
                idle = sample_for(proc.pid, idle_seconds)
                insert_tickets(db, "echo", [{"i": i} for i in range(n)])
                started = time.monotonic()
                load: list[int] = []
                while query(db, "SELECT 1 FROM tickets WHERE status <> 'done' LIMIT 1"):
                    if proc.poll() is not None or time.monotonic() - started > 60 + n:
                        raise RuntimeError("the engine died or did not finish the tickets")
                    load.append(status_kb(proc.pid)["VmRSS"])
                    time.sleep(SAMPLE_EVERY)  # sleep-ok: sampling period
                elapsed = time.monotonic() - started
                after = sample_for(proc.pid, idle_seconds)
                hwm = status_kb(proc.pid)["VmHWM"]
            except BaseException:
                print(engine_log(home))
                raise
    return {
        "n": n,
        "max_vms": max_vms,
        "idle_kb": statistics.median(idle),
        "load_peak_kb": max(load, default=0),
        "load_median_kb": statistics.median(load) if load else 0,
        "after_kb": statistics.median(after),
        "hwm_kb": hwm,
        "load_seconds": elapsed,
        "load_samples": len(load),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="tickets under load (default 200)")
    parser.add_argument("--max-vms", type=int, default=16, help="engine max-vms (default 16)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 tickets")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    install_sigterm_handler()
    print_machine()
    before = load1()
    n = 20 if args.quick else args.n
    r = run(n, args.max_vms, 1.0 if args.quick else 3.0)
    mib = 1024
    print(f"\ndaemon RSS, max-vms {r['max_vms']}, {r['n']} echo tickets (MiB)")
    print(f"idle after start        {r['idle_kb'] / mib:7.1f}")
    print(f"under load, median      {r['load_median_kb'] / mib:7.1f}")
    print(
        f"under load, peak        {r['load_peak_kb'] / mib:7.1f}  ({r['load_samples']} samples over {r['load_seconds']:.1f} s)"
    )
    print(f"idle again after load   {r['after_kb'] / mib:7.1f}")
    print(f"VmHWM (kernel peak)     {r['hwm_kb'] / mib:7.1f}")
    print(f"load average (1 min) before/after: {before:.2f} / {load1():.2f}")
    write_json(args.json, {"benchmark": "memory", **r})


if __name__ == "__main__":
    main()
