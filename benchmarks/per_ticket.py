"""Per ticket, counted (not timed): the store statements, the engine's Python calls and its
threads' system calls that one one-step `echo` ticket costs a running engine.

Each count comes from its own run of `start --foreground --until-idle --max-vms SLOTS` on
a fresh home with N open `echo` tickets (the whole run, start-up included, divided by N):

* **statements**: every statement the engine runs on tickets.db, from SQLite's trace
  (`Connection.set_trace_callback`, installed by a `sitecustomize` module put on the
  engine's `PYTHONPATH`). SQLite reports a statement again at the start of each trigger
  program it runs, so a write that fires triggers counts once per program; `BEGIN
  IMMEDIATE` counts the engine's own transactions (a single-statement write outside one
  commits by itself). Statements are grouped with their literals as `?`.
* **python calls**: `cProfile` of the engine's main thread (its event loop): function
  calls per ticket (generators and coroutines count once per resumption) and the
  functions with the most own time.
* **system calls** (with `--strace`, when `strace` is installed): `strace -f` of the
  engine, counted over the engine's own threads only (the sandboxes it spawns left out),
  by call. Under strace every call is slower, which adds lock waits (`futex`): read those
  as an upper bound.

`--uvloop` runs the engine's event loop on uvloop (installed with pip into the project's
environment first; not a dependency), to compare the two loops' counts and times.

Usage: python benchmarks/per_ticket.py [-n 300] [--slots 4] [--strace] [--uvloop]
                                      [--quick] [--json F]
"""

from __future__ import annotations

import argparse
import collections
import pstats
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import (
    env_for,
    init_home,
    insert_tickets,
    install_sigterm_handler,
    print_machine,
    query,
    temp_root,
    write_json,
)

SITE = """
import atexit, collections, os, sqlite3, threading
if os.environ.get("BENCH_UVLOOP"):
    import asyncio, uvloop
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
_connect, _seen, _lock = sqlite3.connect, collections.Counter(), threading.Lock()
def _trace(sql):
    with _lock:
        _seen[sql] += 1
def connect(*args, **kwargs):
    conn = _connect(*args, **kwargs)
    if str(args[0] if args else kwargs.get("database", "")).endswith("tickets.db"):
        conn.set_trace_callback(_trace)
    return conn
sqlite3.connect = connect
@atexit.register
def _dump():
    with open(os.environ["BENCH_SQL_OUT"], "w") as out:
        for sql, n in _seen.items():
            out.write(f"{n}\\t{' '.join(sql.split())}\\n")
"""


def fresh_home(root: Path, name: str, n: int) -> Path:
    home = root / name
    db = init_home(home)
    insert_tickets(db, "echo", [{"i": i} for i in range(n)])
    return home


def run_engine(
    home: Path, slots: int, prefix: list[str], env: dict[str, str], python: tuple[str, ...] = ()
) -> float:
    """Run the engine to idle under `prefix` (a tracer), with `python` options (a
    profiler's); wall seconds."""
    argv = [*prefix, sys.executable, *python, "-m", "swarm_engine", "start", "--foreground"]
    argv += ["--until-idle", "--max-vms", str(slots)]
    started = time.monotonic()
    done = subprocess.run(
        argv, env=env_for(home, **env), stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=1800, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"engine exited {done.returncode}:\n{done.stderr[-3000:]}")
    counts = query(home / "tickets.db", "SELECT status, count(*) AS c FROM tickets GROUP BY 1")
    if {r["status"]: r["c"] for r in counts}.keys() != {"done"}:
        raise RuntimeError(f"not every ticket is done: {counts}")
    return time.monotonic() - started


def statements(root: Path, n: int, slots: int, env: dict[str, str]) -> dict[str, float]:
    home = fresh_home(root, "sql", n)
    out = root / "sql.txt"
    path = f"{root / 'site'}:{env_for(home)['PYTHONPATH']}"
    run_engine(home, slots, [], {**env, "PYTHONPATH": path, "BENCH_SQL_OUT": str(out)})
    grouped: collections.Counter[str] = collections.Counter()
    for line in out.read_text(encoding="utf-8").splitlines():
        count, _, sql = line.partition("\t")
        sql = re.sub(r"'(?:[^']|'')*'", "?", sql)
        grouped[re.sub(r"\b\d+(?:\.\d+)?\b", "N", sql)[:110]] += int(count)
    total = sum(grouped.values())
    print(f"\nstatements per ticket: {total / n:.1f} (trigger programs counted, see above)")
    for sql, count in grouped.most_common(14):
        print(f"  {count / n:6.2f}  {sql}")
    return {"statements": total / n, "begins": grouped.get("BEGIN IMMEDIATE", 0) / n}


def python_calls(root: Path, n: int, slots: int, env: dict[str, str]) -> dict[str, float]:
    home = fresh_home(root, "calls", n)
    prof = root / "engine.prof"
    wall = run_engine(home, slots, [], env, ("-m", "cProfile", "-o", str(prof)))
    stats = pstats.Stats(str(prof))
    raw = stats.stats  # type: ignore[attr-defined]
    calls = sum(v[1] for v in raw.values())
    idle = sum(v[2] for k, v in raw.items() if k[2] == "<method 'poll' of 'select.epoll' objects>")
    busy = sum(v[2] for v in raw.values()) - idle
    print(f"\npython calls per ticket on the loop thread: {calls / n:.0f}")
    print(f"  profiled wall {wall:.1f} s; loop busy (not in epoll) {busy / n * 1000:.2f} ms/ticket")
    own = sorted(((v[2], v[1], k) for k, v in raw.items() if "swarm_engine" in k[0]), reverse=True)
    for tottime, count, (path, line, name) in own[:10]:
        where = path.split("swarm_engine/")[-1]
        print(f"  {tottime / n * 1000:6.3f} ms  {count / n:5.1f}x  {where}:{line} {name}")
    return {"python_calls": calls / n, "loop_busy_ms_profiled": busy / n * 1000}


def system_calls(root: Path, n: int, slots: int, env: dict[str, str]) -> dict[str, float]:
    home = fresh_home(root, "strace", n)
    traces = root / "trace"
    traces.mkdir()
    run_engine(home, slots, ["strace", "-ff", "-qq", "-o", str(traces / "t")], env)
    files = {int(p.name.split(".")[1]): p for p in traces.iterdir()}
    main = min(files)
    threads, todo = {main}, [main]
    while todo:  # the engine's threads: what it (or a thread of it) cloned as a thread
        for line in files[todo.pop()].read_text(errors="replace").splitlines():
            m = re.search(r"= (\d+)$", line) if "CLONE_THREAD" in line else None
            if m and int(m[1]) not in threads:
                threads.add(int(m[1]))
                todo.append(int(m[1]))
    calls: collections.Counter[str] = collections.Counter()
    for tid in threads:
        for line in files[tid].read_text(errors="replace").splitlines():
            if m := re.match(r"(\w+)\(", line):
                calls[m[1]] += 1
    total = sum(calls.values())
    print(f"\nsystem calls per ticket, the engine's {len(threads)} threads: {total / n:.0f}")
    for name, count in calls.most_common(12):
        print(f"  {count / n:7.1f}  {name}")
    return {"syscalls": total / n, "futex": calls["futex"] / n}


def main() -> None:
    install_sigterm_handler()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--strace", action="store_true", help="also count system calls")
    parser.add_argument("--uvloop", action="store_true", help="the engine's loop on uvloop")
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 tickets")
    parser.add_argument("--json")
    args = parser.parse_args()
    n = 40 if args.quick else args.n
    print_machine()
    print(f"{n} echo tickets, {args.slots} slots, loop: {'uvloop' if args.uvloop else 'asyncio'}")
    if args.strace and shutil.which("strace") is None:
        sys.exit("error: --strace needs strace (apt-get install strace)")
    env: dict[str, str] = {}
    if args.uvloop:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            sys.exit("error: --uvloop needs uvloop in this environment (pip install uvloop)")
        env["BENCH_UVLOOP"] = "1"
    results: dict[str, float] = {}
    with temp_root("per-ticket") as root:
        site = root / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITE, encoding="utf-8")
        if args.uvloop:  # (the sitecustomize sets the policy in every run)
            env["PYTHONPATH"] = f"{site}:{env_for(root)['PYTHONPATH']}"
            env["BENCH_SQL_OUT"] = str(root / "unused-sql.txt")
        results |= statements(root, n, args.slots, env)
        results |= python_calls(root, n, args.slots, env)
        if args.strace:
            results |= system_calls(root, n, args.slots, env)
    if args.json:
        write_json(args.json, {"n": n, "slots": args.slots, "uvloop": args.uvloop, **results})


if __name__ == "__main__":
    main()
