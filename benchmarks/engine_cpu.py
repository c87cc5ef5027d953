"""Engine CPU: where a running engine spends its CPU per ticket, thread by thread.

`start --foreground --until-idle --max-vms SLOTS` on a fresh home with N open `echo`
tickets. Once the first tenth of them are done, the CPU time of each of the engine's
threads (`/proc/<pid>/task/<tid>/stat`: user and system, in clock ticks) is read, again
once the first nine tenths are done; the difference over the tickets finished in between
is each thread's CPU per ticket at steady state (start-up and the last stragglers left
out). Threads are grouped by their kernel name (`swarm_engine/osthreads.py`): the event
loop (the process's own name), `store`, `files`, `vm-command`. The sandboxes are other
processes and are not counted.

The baseline, in the same run (before the engine, on an idle engine-free host): what
the engine's thread hand-offs alone cost. An event loop with SLOTS tasks, each handing
off per ticket as many calls (`--hand-offs`, 9: the store thread 4 times, the file
workers 4 times, a command thread once, each call one `stat`) to thread pools of the
engine's sizes, and nothing else; its process CPU per ticket. The engine's CPU above that
is its own Python and kernel work, not the hand-offs.

Runs alternate (baseline, engine, ...) `--reps` times; medians. With `--perf`, `perf
record` samples the engine between the same two points (perf must be installed) and the
top kernel and user symbols of the engine's threads are printed.

With `--uvloop` the engine's event loop runs on uvloop (pip-installed by hand first; not a
dependency of the project), to compare loops.

Usage: python benchmarks/engine_cpu.py [-n 3000] [--slots 4] [--reps 3] [--perf] [--quick]
                                      [--uvloop] [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import (
    REPO,
    connect,
    init_home,
    insert_tickets,
    install_sigterm_handler,
    print_machine,
    running_engine,
    temp_root,
    write_json,
)

HZ = os.sysconf("SC_CLK_TCK")
KINDS = ("loop", "store", "files", "vm-command", "other")


def thread_cpu(pid: int) -> dict[int, tuple[str, float, float]]:
    """`{tid: (kernel name, user s, system s)}` of every thread of `pid` now."""
    out: dict[int, tuple[str, float, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().rstrip("\n")
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended as it was listed
            continue
        out[int(task.name)] = (name, int(fields[11]) / HZ, int(fields[12]) / HZ)
    return out


def kind_of(tid: int, pid: int, name: str) -> str:
    if tid == pid:
        return "loop"
    return name if name in ("store", "files", "vm-command") else "other"


def done_count(db: Path) -> int:
    conn = connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM tickets WHERE status = 'done'").fetchone()[0])
    finally:
        conn.close()


def wait_done(db: Path, proc: subprocess.Popen[bytes], target: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (n := done_count(db)) < target:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"engine ended or stalled at {n}/{target} tickets done")
        time.sleep(0.05)  # a poll of the store from outside, as any client would
    return n


UVLOOP_SITE = """
import asyncio, uvloop
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
"""


def run_engine(
    root: Path, n: int, slots: int, rep: int, perf: bool, uvloop: bool = False
) -> dict[str, float]:
    home = root / f"engine-{rep}"
    db = init_home(home)
    insert_tickets(db, "echo", [{"message": f"m{i}"} for i in range(n)])
    recorder: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = {}
    if uvloop:  # the engine's loop on uvloop: set by a sitecustomize on its PYTHONPATH
        site = root / "uvloop-site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(UVLOOP_SITE, encoding="utf-8")
        env["PYTHONPATH"] = f"{site}{os.pathsep}{REPO / 'src'}"
    with running_engine(home, "--until-idle", "--max-vms", str(slots), **env) as proc:
        first = wait_done(db, proc, n // 10, 300)
        before = thread_cpu(proc.pid)
        if perf:
            recorder = subprocess.Popen(
                ["perf", "record", "-q", "-g", "-p", str(proc.pid), "-o", str(root / "perf.data")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        last = wait_done(db, proc, n * 9 // 10, 600)
        after = thread_cpu(proc.pid)
        if recorder is not None:
            recorder.send_signal(2)
            recorder.wait()
        proc.wait(timeout=600)
    tickets = last - first
    out = {f"{k} {part}": 0.0 for k in KINDS for part in ("user", "sys")}
    for tid, (name, user, system) in after.items():
        _, user0, system0 = before.get(tid, (name, 0.0, 0.0))
        kind = kind_of(tid, proc.pid, name)
        out[f"{kind} user"] += (user - user0) * 1000 / tickets
        out[f"{kind} sys"] += (system - system0) * 1000 / tickets
    out["total"] = sum(v for k, v in out.items() if k != "total")
    out["tickets"] = tickets
    if perf:
        print_perf(root / "perf.data", [t for t in after if t in before])
    shutil.rmtree(home, ignore_errors=True)
    return out


def print_perf(data: Path, tids: list[int]) -> None:
    done = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "--sort", "sym", "--stdio",
         "-g", "none", "--percent-limit", "0.5", "--tid", ",".join(map(str, tids))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if "%" in line and not line.startswith("#")]
    print("    perf, the engine's threads (share of all samples):")
    for line in lines[:25]:
        print("     ", line.strip())


def hand_offs(n: int, slots: int, per_ticket: int) -> dict[str, float]:
    """CPU ms per ticket of `per_ticket` hand-offs alone, `slots` tickets at a time."""
    order = ["store", "files", "files", "store", "files", "command", "files", "store", "store"]
    plan = [order[i % len(order)] for i in range(per_ticket)]

    async def main() -> float:
        loop = asyncio.get_running_loop()
        pools = {
            "store": ThreadPoolExecutor(1),
            "files": ThreadPoolExecutor(min(32, (os.cpu_count() or 1) + 4)),
            "command": ThreadPoolExecutor(slots),
        }

        async def slot(k: int) -> None:
            for _ in range(k):
                for kind in plan:
                    await loop.run_in_executor(pools[kind], os.stat, "/")

        started = time.process_time()
        await asyncio.gather(*(slot(n // slots) for _ in range(slots)))
        spent = time.process_time() - started
        for pool in pools.values():
            pool.shutdown()
        return spent

    return {"cpu ms/ticket": asyncio.run(main()) * 1000 / (n // slots * slots)}


def main() -> None:
    install_sigterm_handler()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--hand-offs", type=int, default=9)
    parser.add_argument("--perf", action="store_true")
    parser.add_argument(
        "--uvloop", action="store_true", help="the engine's loop on uvloop (pip install uvloop)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 200, 1 repetition")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.quick:
        args.n, args.reps = 200, 1
    if args.uvloop:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            sys.exit("error: --uvloop needs uvloop in this environment (pip install uvloop)")
    if args.perf and shutil.which("perf") is None:
        sys.exit("engine_cpu: --perf needs `perf` (apt-get install linux-perf)")
    print_machine()
    print(f"{args.n} echo tickets, {args.slots} slots, {args.reps} repetitions,"
          f" steady state = tickets {args.n // 10}..{args.n * 9 // 10}")  # fmt: skip
    engine: list[dict[str, float]] = []
    base: list[dict[str, float]] = []
    with temp_root("swarm-bench-engine-cpu-") as root:
        for rep in range(1, args.reps + 1):
            base.append(hand_offs(args.n, args.slots, args.hand_offs))
            print(f"rep {rep} hand-offs alone {base[-1]['cpu ms/ticket']:5.2f} ms/ticket")
            engine.append(run_engine(root, args.n, args.slots, rep, args.perf, args.uvloop))
            row = engine[-1]
            parts = "  ".join(f"{k} {row[k + ' user']:.2f}+{row[k + ' sys']:.2f}" for k in KINDS)
            print(f"rep {rep} engine {row['total']:5.2f} ms/ticket (user+sys)  {parts}"
                  f"  ({row['tickets']:.0f} tickets)")  # fmt: skip
    med = {k: statistics.median(r[k] for r in engine) for k in engine[0]}
    hand = statistics.median(r["cpu ms/ticket"] for r in base)
    print(f"\nmedians, CPU ms per ticket (user + system), {args.reps} reps")
    for k in KINDS:
        print(f"  {k:10s} {med[k + ' user']:5.2f} + {med[k + ' sys']:5.2f}")
    print(f"  {'engine':10s} {med['total']:5.2f}")
    print(f"  hand-offs alone ({args.hand_offs} per ticket) {hand:.2f}:"
          f" {hand / med['total']:.0%} of the engine's")  # fmt: skip
    write_json(args.json, {"engine": engine, "hand_offs": base, "median": med,
                           "hand_offs_median": hand})  # fmt: skip


if __name__ == "__main__":
    main()
