"""Engine memory and storage for a step that prints a lot: 1 MB against 200 MB of stdout.

Per size, a fresh home and `start --foreground --max-vms 1`. A `shell` agent prints
SIZE bytes of `x` and then `tail-marker` (`head -c SIZE /dev/zero | tr '\\0' x`). First a
1 KB warm-up ticket (imports, first sandbox), then VmHWM of the daemon (its peak resident
set, read from /proc/<pid>/status) as the baseline; then one ticket of SIZE bytes, and
VmHWM again once it is done (the daemon is still running, so the kernel's peak is exact).
Also: how long the step took (`step_executions.duration_ms`), the size of tickets.db
(+ WAL) and of the step's log file, the stored lengths of the result, and whether the
result kept the tail. Only the daemon is counted, not the sandbox processes.

Usage: python benchmarks/big_output.py [--sizes 1000000,200000000] [--quick] [--json out.json]
       [--isolation auto|bwrap|none] [--src PATH]   (another checkout's src/, e.g. to measure a previous version)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import _common
from _common import (
    engine_log,
    init_home,
    insert_tickets,
    install_sigterm_handler,
    load1,
    print_machine,
    query,
    running_engine,
    swarm,
    temp_root,
    wait_registered,
    wait_until,
    write_json,
)

AGENT = """\
name: bigout
version: 1.0.0
kind: shell
command: "head -c ${inputs.size} /dev/zero | tr '\\\\0' x; echo; echo tail-marker"
timeout_seconds: 300
"""


def hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for {pid}")


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


def run_size(size: int, isolation: str) -> dict[str, Any]:
    with temp_root("bigout") as root:
        home = root / "home"
        db = init_home(home)
        (home / "config.toml").write_text(f'[backend_options.process]\nisolation = "{isolation}"\n')
        package = root / "agent"
        package.mkdir()
        (package / "agent.yaml").write_text(AGENT)
        swarm(home, "agent", "register", str(package))
        with running_engine(home, "--max-vms", "1") as proc:
            try:
                wait_registered(db, proc)
                insert_tickets(db, "bigout", [{"size": 1000}])
                done = "SELECT 1 FROM tickets WHERE id = ? AND status IN ('done', 'failed')"
                wait_until(lambda: query(db, done, 1), 60, "the warm-up ticket", proc)
                base_kb = hwm_kb(proc.pid)
                db_before = db_bytes(db)
                insert_tickets(db, "bigout", [{"size": size}])
                wait_until(lambda: query(db, done, 2), 600, "the big ticket", proc)
                peak_kb = hwm_kb(proc.pid)
                db_after = db_bytes(db)
            except BaseException:
                print(engine_log(home))
                raise
        sql = "SELECT status, length(result) AS n, result FROM tickets WHERE id = 2"
        ticket = query(db, sql)[0]
        step = query(
            db,
            "SELECT s.duration_ms, length(s.outputs) AS n, s.log_path, length(r.outputs) AS run_n"
            " FROM step_executions s JOIN workflow_runs r ON r.id = s.run_id"
            " WHERE r.ticket_id = 2",
        )[0]
        log_path = Path(step["log_path"]) if step["log_path"] else None
        return {
            "size": size,
            "status": ticket["status"],
            "baseline_hwm_kb": base_kb,
            "peak_hwm_kb": peak_kb,
            "step_ms": step["duration_ms"],
            "db_growth_bytes": db_after - db_before,
            "log_bytes": log_path.stat().st_size if log_path and log_path.exists() else None,
            "result_chars": ticket["n"],
            "step_outputs_chars": step["n"],
            "run_outputs_chars": step["run_n"],
            "tail_kept": "tail-marker" in (ticket["result"] or ""),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,200000000", help="bytes, comma-separated")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 MB and 20 MB")
    parser.add_argument("--isolation", default="auto", choices=["auto", "bwrap", "none"])
    parser.add_argument("--src", help="run this src/ folder instead of the repository's")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    install_sigterm_handler()
    if args.src:
        _common.REPO = Path(os.path.abspath(args.src)).parent
    print_machine()
    before = load1()
    sizes = [1_000_000, 20_000_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    results = [run_size(size, args.isolation) for size in sizes]
    print(f"process backend, isolation {args.isolation}")
    mib = 1024 * 1024
    print(f"\n{'stdout':>10} {'status':>7} {'HWM base':>9} {'HWM peak':>9} {'step':>7}"
          f" {'db growth':>10} {'log file':>9} {'result':>8} {'step row':>9} {'run row':>8} tail")  # fmt: skip
    for r in results:
        print(
            f"{r['size'] / 1e6:8.0f}MB {r['status']:>7} {r['baseline_hwm_kb'] / 1024:7.1f}Mi"
            f" {r['peak_hwm_kb'] / 1024:7.1f}Mi {r['step_ms'] / 1000:6.2f}s"
            f" {r['db_growth_bytes'] / mib:8.2f}Mi"
            f" {(r['log_bytes'] or 0) / mib:7.2f}Mi {r['result_chars'] or 0:>8}"
            f" {r['step_outputs_chars'] or 0:>9} {r['run_outputs_chars'] or 0:>8}"
            f" {'yes' if r['tail_kept'] else 'no'}"
        )
    print(f"load average (1 min) before/after: {before:.2f} / {load1():.2f}")
    write_json(args.json, {"benchmark": "big_output", "results": results})


if __name__ == "__main__":
    main()
