"""Dispatch latency: from an outside INSERT's commit to the step's start, after idle gaps.

An idle daemon (`--max-vms 2`, default 1 s poll interval, so what is measured is the
wake-up, not the poll) runs tickets one at a time. For each, a separate `sqlite3`
connection inserts an `open` ticket for the built-in `shell` agent whose command is
`date +%s%N` (the sandbox shares the host clock), taking the host clock just before
COMMIT. Before each insert the engine has been idle for GAP seconds (gaps 0, 1, 5, 30 by
default; "0" inserts as soon as the previous ticket is done).

  pickup   commit -> step_executions.started_at (the step's recorded start; the goal)
  total    commit -> the first instruction inside the sandbox

and the engine's own timestamps (UTC, ms) split pickup into stages:
  wake+claim   commit -> tickets.claimed_at
  prepare      claimed_at -> vms.created_at (plan, run + step rows, artifacts folder)
  boot         vms.created_at -> step_executions.started_at (workspace, vms row, step row)

Finally the idle engine's CPU use: its utime+stime over an idle window (from /proc).

Usage: python benchmarks/dispatch_latency.py [--gaps 0,1,5,30] [--per-gap 0:100,1:30,5:12,30:6]
       [--idle-window 30] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from _common import (
    connect,
    engine_log,
    init_home,
    install_sigterm_handler,
    load1,
    parse_ts,
    print_machine,
    query,
    running_engine,
    summary,
    temp_root,
    wait_registered,
    wait_until,
    write_json,
)

TARGET_P50_MS = 5.0
TARGET_P99_MS = 20.0
STAGES = ("wake+claim", "prepare", "boot")
DEFAULT_PER_GAP = {0.0: 100, 1.0: 30, 5.0: 12, 30.0: 6}
DETAILS_SQL = """
SELECT t.status, t.result, t.error, t.claimed_at, s.started_at, v.created_at AS vm_created
FROM tickets t
JOIN workflow_runs r ON r.ticket_id = t.id
JOIN step_executions s ON s.run_id = r.id
JOIN vms v ON v.id = s.vm_id
WHERE t.id = ?
"""


def one_ticket(db: Path, conn: Any, proc: Any) -> dict[str, float]:
    """Insert one ticket, wait for it, and return its latencies and stages in ms."""
    conn.execute("BEGIN IMMEDIATE")
    cur = conn.execute(
        "INSERT INTO tickets (title, status, agent_id, inputs) VALUES ('lat', 'open', 'shell', ?)",
        (json.dumps({"command": "date +%s%N"}),),
    )
    tid = cur.lastrowid
    t0_ns = time.time_ns()
    conn.execute("COMMIT")
    wait_until(
        lambda: query(
            db, "SELECT 1 FROM tickets WHERE id = ? AND status IN ('done','failed')", tid
        ),
        60,
        f"ticket {tid}",
        proc,
    )
    row = query(db, DETAILS_SQL, tid)[0]
    if row["status"] != "done":
        raise RuntimeError(f"ticket {tid} {row['status']}: {row['error']}")
    first_ns = int(json.loads(row["result"])["stdout"].split()[0])
    t0 = t0_ns / 1e9
    claimed = parse_ts(row["claimed_at"])
    created = parse_ts(row["vm_created"])
    started = parse_ts(row["started_at"])
    return {
        "pickup": (started - t0) * 1000,
        "total": (first_ns - t0_ns) / 1e6,
        "wake+claim": (claimed - t0) * 1000,
        "prepare": (created - claimed) * 1000,
        "boot": (started - created) * 1000,
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def run(per_gap: dict[float, int], warmup: int, idle_window: float) -> dict[str, Any]:
    with temp_root("latency") as root:
        home = root / "home"
        db = init_home(home)
        with running_engine(home, "--max-vms", "2") as proc:
            wait_registered(db, proc)
            conn = connect(db)
            samples: dict[str, list[dict[str, float]]] = {}
            try:
                for _ in range(warmup):
                    one_ticket(db, conn, proc)
                for gap, count in per_gap.items():
                    got = samples.setdefault(f"{gap:g}", [])
                    for _ in range(count):
                        # the idle gap (a little jitter so samples are not in lock-step
                        # with the engine's heartbeat)
                        time.sleep(gap + random.random() * 0.01)  # sleep-ok: idle gap
                        got.append(one_ticket(db, conn, proc))
                time.sleep(1)  # sleep-ok: let the last ticket's trailing writes settle
                before = cpu_seconds(proc.pid)
                time.sleep(idle_window)  # sleep-ok: the idle window being measured
                idle_cpu = (cpu_seconds(proc.pid) - before) / idle_window * 100
            except BaseException:
                print(engine_log(home))
                raise
            finally:
                conn.close()
    return {
        "per_gap": per_gap,
        "warmup": warmup,
        "samples": samples,
        "idle_cpu_percent": idle_cpu,
        "idle_window_s": idle_window,
    }


def report(result: dict[str, Any]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    met = True
    print(
        f"\ndispatch latency by idle gap before the insert, ms (after {result['warmup']} warm-up)"
    )
    print(f"{'gap':>5} {'n':>4} {'metric':<12}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'mean':>8}")
    for gap, samples in result["samples"].items():
        stats = {k: summary([s[k] for s in samples]) for k in ("pickup", *STAGES, "total")}
        rows[gap] = stats
        met = (
            met
            and stats["pickup"]["p50"] <= TARGET_P50_MS
            and stats["pickup"]["p99"] <= TARGET_P99_MS
        )
        for name, st in stats.items():
            print(
                f"{gap + 's':>5} {len(samples):>4} {name:<12}"
                + "".join(f"{st[k]:>8.1f}" for k in ("p50", "p90", "p99", "max", "mean"))
            )
    print(
        f"target pickup p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms at every gap: "
        + ("MET" if met else "NOT MET")
    )
    print("(pickup and stages come from ms-resolution timestamps: each is +-1 ms)")
    print(
        f"idle engine CPU: {result['idle_cpu_percent']:.3f} % of one core"
        f" over {result['idle_window_s']:g} s"
    )
    return {"summary": rows, "target_met": met}


def parse_per_gap(text: str) -> dict[float, int]:
    out: dict[float, int] = {}
    for part in text.split(","):
        gap, _, count = part.partition(":")
        out[float(gap)] = int(count)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--per-gap",
        default=",".join(f"{g:g}:{n}" for g, n in DEFAULT_PER_GAP.items()),
        help="GAP_SECONDS:TICKETS,... (default %(default)s)",
    )
    parser.add_argument("--warmup", type=int, default=3, help="tickets run first, not counted")
    parser.add_argument("--idle-window", type=float, default=30.0, help="seconds of idle CPU")
    parser.add_argument("--quick", action="store_true", help="smoke run: few tickets, short gaps")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    install_sigterm_handler()
    per_gap = {0.0: 10, 1.0: 3} if args.quick else parse_per_gap(args.per_gap)
    print_machine()
    before = load1()
    result = run(per_gap, 1 if args.quick else args.warmup, 3.0 if args.quick else args.idle_window)
    stats = report(result)
    print(f"load average (1 min) before/after: {before:.2f} / {load1():.2f}")
    write_json(args.json, {"benchmark": "dispatch_latency", **stats, **result})


if __name__ == "__main__":
    main()
