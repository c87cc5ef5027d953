"""Throughput: echo tickets per second at max-vms 1, 4 and 16, against a bare runner.

Engine: a fresh home per level; N open tickets for the built-in `echo` agent are
inserted first, then `start --foreground --until-idle --max-vms M` runs them all and
exits. Two rates are reported: N / wall time of the engine process (includes Python
start-up, registration, start-up cleanup and shutdown) and N / (last
`tickets.completed_at` - first `tickets.claimed_at`) from the recorded timestamps.

Bare: the same work without the engine. The same process sandbox (`ProcessBackend`,
so the same bwrap + prlimit argv), the same VM spec as the echo agent, the same
per-task steps (fresh workspace, write the inputs file, run `cat` on it in the sandbox,
destroy) with the same parallelism (an asyncio semaphore of M), no database.
The ratio engine/bare (recorded-span rate over bare rate) is what the engine costs.

Usage: python benchmarks/throughput.py [-n 300] [--levels 1,4,16] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from _common import (
    engine_log,
    init_home,
    insert_tickets,
    install_sigterm_handler,
    load1,
    parse_ts,
    print_machine,
    query,
    start_engine,
    stop_engine,
    temp_root,
    write_json,
)

from swarm_engine.agents.files import INPUTS_FILE
from swarm_engine.registry.builtins import builtin_agents
from swarm_engine.vm.base import VMSpec
from swarm_engine.vm.pool import spec_for
from swarm_engine.vm.process import ProcessBackend, ProcessConfig


def echo_spec() -> VMSpec:
    """The VM spec the engine builds for the built-in echo agent."""
    echo = next(a for a in builtin_agents() if a.name == "echo")
    return spec_for(echo.vm.model_dump(), echo.memory_mb, echo.vcpus, echo.timeout_seconds)


def run_engine(root: Path, n: int, max_vms: int) -> dict[str, float]:
    home = root / f"engine-{max_vms}"
    db = init_home(home)
    insert_tickets(db, "echo", [{"i": i} for i in range(n)])
    started = time.monotonic()
    proc = start_engine(
        home, "--until-idle", "--max-vms", str(max_vms), log=home / "engine-bench.log"
    )
    try:
        code = proc.wait(timeout=60 + n)
    except subprocess.TimeoutExpired:
        print(engine_log(home))
        raise
    finally:
        stop_engine(proc)
    wall = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"engine exited {code}:\n{engine_log(home)}")
    counts = query(db, "SELECT status, count(*) AS c FROM tickets GROUP BY status")
    if {r["status"]: r["c"] for r in counts} != {"done": n}:
        raise RuntimeError(f"not every ticket is done: {counts}\n{engine_log(home)}")
    span = query(db, "SELECT min(claimed_at) AS a, max(completed_at) AS b FROM tickets")[0]
    recorded = parse_ts(span["b"]) - parse_ts(span["a"])
    return {
        "wall_s": wall,
        "recorded_s": recorded,
        "wall_rate": n / wall,
        "recorded_rate": n / recorded,
    }


async def _bare(root: Path, n: int, max_vms: int) -> float:
    backend = ProcessBackend(root, ProcessConfig())
    isolated = backend.isolated  # probe bubblewrap before the clock starts
    if not isolated:
        print("warning: bubblewrap does not work here; the bare runner is not isolated")
    spec = echo_spec()
    slots = asyncio.Semaphore(max_vms)

    async def task(i: int) -> None:
        async with slots:
            vm = await backend.boot(f"vm-{uuid.uuid4().hex[:12]}", spec)
            try:
                await vm.put_file(INPUTS_FILE, json.dumps({"i": i}).encode())
                result = await vm.exec(["cat", INPUTS_FILE], timeout=spec.timeout_seconds)
                if not result.ok or json.loads(result.stdout) != {"i": i}:
                    raise RuntimeError(f"bare task {i} failed: {result}")
            finally:
                await vm.destroy()

    started = time.monotonic()
    await asyncio.gather(*(task(i) for i in range(n)))
    elapsed = time.monotonic() - started
    await backend.close()
    return elapsed


def run_bare(root: Path, n: int, max_vms: int) -> dict[str, float]:
    elapsed = asyncio.run(_bare(root / f"bare-{max_vms}", n, max_vms))
    return {"wall_s": elapsed, "rate": n / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300, help="tickets per level (default 300)")
    parser.add_argument("--levels", default="1,4,16", help="max-vms levels (default 1,4,16)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 tickets at 1 and 4")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    install_sigterm_handler()
    n = 20 if args.quick else args.n
    levels = [1, 4] if args.quick else [int(x) for x in args.levels.split(",")]
    print_machine()
    before = load1()
    results: list[dict[str, Any]] = []
    with temp_root("throughput") as root:
        for m in levels:
            bare = run_bare(root, n, m)
            engine = run_engine(root, n, m)
            row = {"max_vms": m, "n": n, "engine": engine, "bare": bare}
            row["ratio"] = engine["recorded_rate"] / bare["rate"]
            row["ratio_wall"] = engine["wall_rate"] / bare["rate"]
            results.append(row)
            print(
                f"max-vms {m:>2}: engine {engine['recorded_rate']:6.1f}/s recorded"
                f" ({engine['wall_rate']:5.1f}/s wall)  bare {bare['rate']:6.1f}/s"
                f"  engine/bare {row['ratio']:.2f} ({row['ratio_wall']:.2f} wall)",
                flush=True,
            )
    print(f"\nthroughput, {n} echo tickets per level, tickets/s")
    print(
        f"{'max-vms':>8}{'engine (span)':>15}{'engine (wall)':>15}{'bare':>9}"
        f"{'ratio':>8}{'ratio (wall)':>14}"
    )
    for r in results:
        e, b = r["engine"], r["bare"]
        print(
            f"{r['max_vms']:>8}{e['recorded_rate']:>15.1f}{e['wall_rate']:>15.1f}"
            f"{b['rate']:>9.1f}{r['ratio']:>8.2f}{r['ratio_wall']:>14.2f}"
        )
    print(f"load average (1 min) before/after: {before:.2f} / {load1():.2f}")
    write_json(args.json, {"benchmark": "throughput", "results": results})


if __name__ == "__main__":
    main()
