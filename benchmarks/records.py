"""Records: the CPU that swarm-engine's records of one ticket cost, against huey's of one task.

No sandbox, no event loop, no threads: one thread makes, ticket after ticket, what the
engine records and makes for a one-step `echo` ticket (`_records.TicketRecords`: the claim,
the run's start with its step row, the VM's boot row, the artifacts folder and
`output.log`, the VM folder and workspace, the VM ready and the step running, the inputs
file, the log's write, the folder's removal, the run's end read back), each timed with
`time.thread_time()` (this thread's CPU, user + system). The baseline, in the same run:
huey's consumer-side work per task on one thread, `SqliteHuey.dequeue()` then
`Huey.execute(task)` of a task that returns a 2-tuple as `peers.py`'s does (its result
stored), huey in its own venv (`peers.huey_python`). Runs alternate (swarm, huey, ...),
`--reps` times; medians.

Why it matters (issue 12 item 2): on the `peers.py` job this host is CPU-bound, and the
sandboxes cost every runner the same, so a runner's rate follows its own CPU per job.
Whatever the engine's design, it spends at least these records' CPU per ticket; huey
spends at least its own per task.

Usage: python benchmarks/records.py [-n 2000] [--reps 3] [--src PATH] [--quick] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import _common
from _common import init_home, insert_tickets, install_sigterm_handler, print_machine, temp_root
from _common import write_json as save_json

HERE = Path(__file__).resolve()


def run_swarm(root: Path, n: int, rep: int) -> dict[str, float]:
    """N tickets' records on this thread: CPU ms per ticket by stage, and wall ms."""
    from _records import STAGES, TicketRecords, register_engine

    home = root / f"swarm-{rep}"
    db = init_home(home)
    insert_tickets(db, "echo", [{"i": i} for i in range(n)])
    engine_id = f"records:{os.getpid()}:{rep}"
    register_engine(db, engine_id, 1)
    spent = dict.fromkeys(STAGES, 0.0)
    last = [time.thread_time()]

    def mark(stage: str) -> None:
        now = time.thread_time()
        spent[stage] += now - last[0]
        last[0] = now

    records = TicketRecords(db, home, engine_id)
    done = 0
    started = time.perf_counter()
    try:
        last[0] = time.thread_time()
        while records.one_ticket(lambda: b"hello\n", mark):
            done += 1
    finally:
        records.close()
    wall = time.perf_counter() - started
    if done != n:
        raise RuntimeError(f"swarm: {done} of {n} tickets recorded")
    result = {stage: cpu / n * 1000 for stage, cpu in spent.items()}
    result["total"] = sum(spent.values()) / n * 1000
    result["wall"] = wall / n * 1000
    return result


def run_huey(python: Path, root: Path, n: int, rep: int) -> dict[str, float]:
    import peers

    args = ["--huey-child", str(root / f"huey-{rep}.db"), "-n", str(n)]
    return peers.huey_json(python, HERE, args, timeout=120 + n)


def huey_child(db: str, n: int) -> None:
    """(In huey's venv.) Enqueue N tasks (not timed), then dequeue and execute each on this
    thread; prints CPU ms per task by stage, and wall ms, as JSON."""
    from huey import SqliteHuey

    huey = SqliteHuey("records", filename=db)

    @huey.task(name="job")
    def job(i: int) -> tuple[float, float]:
        return (float(i), float(i))

    for i in range(n):
        job(i)
    spent = {"dequeue": 0.0, "execute + result": 0.0}
    started = time.perf_counter()
    for _ in range(n):
        t0 = time.thread_time()
        task = huey.dequeue()
        t1 = time.thread_time()
        huey.execute(task)
        t2 = time.thread_time()
        spent["dequeue"] += t1 - t0
        spent["execute + result"] += t2 - t1
    wall = time.perf_counter() - started
    if huey.pending_count() != 0 or huey.result_count() != n:
        raise RuntimeError(f"huey: {huey.pending_count()} pending, {huey.result_count()} results")
    result = {stage: cpu / n * 1000 for stage, cpu in spent.items()}
    result["total"] = sum(spent.values()) / n * 1000
    result["wall"] = wall / n * 1000
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="tickets (and tasks) per run")
    parser.add_argument("--reps", type=int, default=3, help="alternating repetitions")
    parser.add_argument("--huey-version", default=None, help="default: peers.py's")
    parser.add_argument("--src", help="measure this src/ folder instead of the repository's")
    parser.add_argument("--quick", action="store_true", help="smoke run: 50, 1 repetition")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    install_sigterm_handler()
    n, reps = (50, 1) if args.quick else (args.n, args.reps)
    if args.src:
        src = Path(os.path.abspath(args.src))
        _common.REPO = src.parent
        sys.path.insert(0, str(src))
    import peers

    version = args.huey_version or peers.HUEY_VERSION
    python = peers.huey_python(version)
    print_machine()
    print(f"{n} tickets / tasks per run, one thread, {reps} repetitions, huey {version}")
    runs: dict[str, list[dict[str, float]]] = {"swarm": [], "huey": []}
    with temp_root("records") as root:
        for rep in range(1, reps + 1):
            for name in runs:
                result = (
                    run_swarm(root, n, rep) if name == "swarm" else run_huey(python, root, n, rep)
                )
                runs[name].append(result)
                print(
                    f"rep {rep} {name:<5} CPU {result['total']:6.3f} ms,"
                    f" wall {result['wall']:6.3f} ms per ticket",
                    flush=True,
                )
    med = {
        name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()
    }
    for name, stages in med.items():
        print(f"\n{name}: CPU ms per ticket (medians of {reps})")
        for stage, value in stages.items():
            if stage not in ("total", "wall"):
                print(f"  {stage:<26}{value:7.3f}")
        print(f"  {'total':<26}{stages['total']:7.3f}   (wall {stages['wall']:.3f})")
    ratio = med["swarm"]["total"] / med["huey"]["total"]
    print(f"\nswarm/huey CPU per ticket: {ratio:.2f}")
    save_json(
        args.json,
        {"benchmark": "records", "n": n, "reps": reps, "huey": version, "runs": runs,
         "medians": med, "swarm/huey": ratio},
    )  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--huey-child":
        child = argparse.ArgumentParser()
        child.add_argument("db")
        child.add_argument("-n", type=int, required=True)
        ns = child.parse_args(sys.argv[2:])
        huey_child(ns.db, ns.n)
    else:
        main()
