"""Cost as the work grows: claims and dispatch with 0, 100,000 and 1,000,000 finished tickets.

For each store (SQLite; PostgreSQL when a server can be started, see
tests/support/postgres.py) and each history size H, in a fresh database:

1. History: H finished tickets, each with its run and its step, inserted set-wise by SQL
   (as years of use would leave them; the status trigger records their events too).
2. Store cycle: 300 open tickets, then per ticket the engine's statements without a VM
   (claim, start the run, add the step, step running, step finished, finish the run),
   through the store API; milliseconds per ticket, p50 and p95.
3. Engine: 200 `echo` tickets run by `swarm-engine start --until-idle --max-vms 4`;
   tickets per second from the first claim to the last completion (recorded times).
4. Dispatch: an idle engine, 20 tickets inserted one at a time by an outside writer;
   claimed_at - created_at as the database recorded them, p50 and p95.

The figures should stay flat as H grows: claims read only open and live rows (partial
indexes `tickets_open`, `tickets_live`). Usage:

    python benchmarks/growth.py [--sizes 0,100000,1000000] [--dialects sqlite,postgresql] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    install_sigterm_handler,
    load1,
    percentile,
    print_machine,
    start_engine,
    stop_engine,
    temp_root,
    wait_until,
    write_json,
)

sys.path.insert(0, str(REPO))
from tests.support.postgres import Server, pg_query, start_server

from swarm_engine.models import Usage
from swarm_engine.store import Store, open_store

HISTORY_SQLITE = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {h})
INSERT INTO tickets (title, status, agent_id, attempts, result, completed_at, claimed_at,
                     started_at, engine_id, attempt_id)
SELECT 'old ' || i, 'done', 'echo', 1, '{{}}', '2026-01-01T00:00:01.000Z',
       '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 'old', 'old-' || i FROM n;
INSERT INTO engines (id, kind, host, pid, max_vms, backend, state)
VALUES ('old', 'daemon', 'old', 1, 4, 'process', 'stopped');
INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, engine_id, execution_mode, status,
                           completed_at, duration_ms)
SELECT id, 1, attempt_id, 'old', 'single', 'done', completed_at, 1000 FROM tickets;
INSERT INTO step_executions (run_id, step_id, agent_name, agent_version, agent_kind, status,
                             outputs, completed_at, duration_ms, exit_code)
SELECT id, 'main', 'echo', '1.0.0', 'echo', 'done', '{{}}', completed_at, 900, 0
  FROM workflow_runs;
"""

HISTORY_POSTGRES = """
INSERT INTO tickets (title, status, agent_id, attempts, result, completed_at, claimed_at,
                     started_at, engine_id, attempt_id)
SELECT 'old ' || i, 'done', 'echo', 1, '{}', '2026-01-01T00:00:01Z', '2026-01-01T00:00:00Z',
       '2026-01-01T00:00:00Z', 'old', 'old-' || i FROM generate_series(1, %(h)s) i;
INSERT INTO engines (id, kind, host, pid, max_vms, backend, state)
VALUES ('old', 'daemon', 'old', 1, 4, 'process', 'stopped');
INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, engine_id, execution_mode, status,
                           completed_at, duration_ms)
SELECT id, 1, attempt_id, 'old', 'single', 'done', completed_at, 1000 FROM tickets;
INSERT INTO step_executions (run_id, step_id, agent_name, agent_version, agent_kind, status,
                             outputs, completed_at, duration_ms, exit_code)
SELECT id, 'main', 'echo', '1.0.0', 'echo', 'done', '{}', completed_at, 900, 0
  FROM workflow_runs;
ANALYZE;
"""


def fill_history(target: str | Path, h: int) -> float:
    """Insert `h` finished tickets with runs and steps; returns seconds taken."""
    t0 = time.perf_counter()
    if h == 0:
        open_store(target).close()
        return 0.0
    open_store(target).close()
    if isinstance(target, str):
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            for statement in HISTORY_POSTGRES.split(";"):
                if statement.strip():
                    conn.execute(statement.replace("%(h)s", str(h)))  # type: ignore[call-overload]
    else:
        import sqlite3

        conn = sqlite3.connect(target)
        conn.executescript(HISTORY_SQLITE.format(h=h))
        conn.execute("ANALYZE")
        conn.close()
    return time.perf_counter() - t0


def store_cycle(store: Store, n: int) -> list[float]:
    """Milliseconds per ticket for the engine's statements, without a VM."""
    store.engines.register("bench", kind="daemon", host="b", pid=1, max_vms=4, backend="process")
    for i in range(n):
        store.tickets.create(title=f"new {i}", agent_id="echo")
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        [ticket] = store.tickets.claim_next(engine_id="bench", attempt_id=uuid.uuid4().hex,
                                           lease_ttl=30)  # fmt: skip
        run = store.runs.start_run(
            ticket, engine_id="bench", workflow_name=None, workflow_version=None, inputs={}
        )
        step = store.runs.add_step(run, step_id="main", agent_name="echo", agent_version="1",
                                   agent_kind="echo", inputs={})  # fmt: skip
        vm = f"vm-b{i}-{uuid.uuid4().hex[:6]}"
        store.vms.record_boot(vm, backend="process", host="b", engine_id="bench", owner_pid=1,
                              memory_mb=64, vcpus=1)  # fmt: skip
        with store.transaction():
            store.vms.record_ready(vm, pid=None, workspace=None, socket_path=None,
                                   overlay_path=None, isolation="bwrap")  # fmt: skip
            store.vms.record_busy(vm, step)
            store.runs.step_started(step, vm)
        store.runs.step_finished(step, status="done", outputs={}, exit_code=0, error=None,
                                 usage=Usage())  # fmt: skip
        store.runs.finish_run(run, ticket, status="done", outputs={}, outputs_in_steps=True)
        store.vms.record_destroyed(vm)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def rows(target: str | Path, sql: str) -> list[dict[str, Any]]:
    if isinstance(target, str):
        return pg_query(target, sql)
    import sqlite3

    conn = sqlite3.connect(target, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def to_seconds(value: Any) -> float:
    if isinstance(value, str):
        from _common import parse_ts

        return parse_ts(value)
    return float(value.timestamp())


def engine_rate(home: Path, target: str | Path, env: dict[str, str], n: int) -> float:
    writer = open_store(target)
    first = writer.tickets.create(title="e0", agent_id="echo", status="draft")
    for i in range(1, n):
        writer.tickets.create(title=f"e{i}", agent_id="echo", status="draft")
    writer.close()
    sql_open = f"UPDATE tickets SET status = 'open' WHERE id >= {first}"
    if isinstance(target, str):
        pg_query(target, sql_open + " RETURNING id")
    else:
        import sqlite3

        conn = sqlite3.connect(target, timeout=30)
        conn.execute(sql_open)
        conn.commit()
        conn.close()
    proc = start_engine(home, "--until-idle", "--max-vms", "4", **env)
    proc.wait(timeout=600)
    span = rows(
        target,
        f"SELECT min(claimed_at) AS a, max(completed_at) AS b, count(*) AS n FROM tickets"
        f" WHERE id >= {first} AND status = 'done'",
    )[0]
    if int(span["n"]) != n:
        raise RuntimeError(f"only {span['n']} of {n} tickets done")
    return n / (to_seconds(span["b"]) - to_seconds(span["a"]))


def dispatch(home: Path, target: str | Path, env: dict[str, str], n: int) -> list[float]:
    proc = start_engine(home, "--max-vms", "4", SWARM_POLL_INTERVAL="30", **env)
    out: list[float] = []
    try:
        wait_until(lambda: rows(target, "SELECT 1 FROM engines WHERE state = 'running'"
                                " AND host <> 'b' AND id <> 'old'"), 60, "engine", proc)  # fmt: skip
        writer = open_store(target)
        for _ in range(n):
            time.sleep(0.2)  # an idle gap before each outside insert
            tid = writer.tickets.create(title="lat", agent_id="echo")
            wait_until(lambda tid=tid: rows(target, f"SELECT 1 FROM tickets WHERE id = {tid}"
                                            " AND status = 'done'"), 60, "ticket", proc)  # fmt: skip
            r = rows(target, f"SELECT created_at, claimed_at FROM tickets WHERE id = {tid}")[0]
            out.append((to_seconds(r["claimed_at"]) - to_seconds(r["created_at"])) * 1000)
        writer.close()
    finally:
        stop_engine(proc)
    return out


def measure(
    dialect: str, make: Callable[[Path], tuple[str | Path, dict[str, str]]], h: int, quick: bool
) -> dict[str, Any]:
    with temp_root(f"growth-{dialect}-{h}") as root:
        home = root / "home"
        target, env = make(home)
        fill = fill_history(target, h)
        store = open_store(target)
        cycle = store_cycle(store, 60 if quick else 300)
        store.close()
        rate = engine_rate(home, target, env, 40 if quick else 200)
        lat = dispatch(home, target, env, 5 if quick else 20)
    result = {
        "dialect": dialect,
        "history": h,
        "fill_s": round(fill, 1),
        "cycle_ms_p50": round(percentile(cycle, 50), 2),
        "cycle_ms_p95": round(percentile(cycle, 95), 2),
        "engine_tickets_per_s": round(rate, 1),
        "dispatch_ms_p50": round(percentile(lat, 50), 1),
        "dispatch_ms_p95": round(percentile(lat, 95), 1),
        "load1": load1(),
    }
    print(
        f"{dialect:10} history {h:>9,}  store cycle p50 {result['cycle_ms_p50']:6.2f} ms"
        f" p95 {result['cycle_ms_p95']:6.2f} ms  engine {result['engine_tickets_per_s']:6.1f}/s"
        f"  dispatch p50 {result['dispatch_ms_p50']:6.1f} ms p95 {result['dispatch_ms_p95']:6.1f}"
        f" ms  (fill {fill:.0f} s, load {result['load1']})",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,100000,1000000")
    parser.add_argument("--dialects", default="sqlite,postgresql")
    parser.add_argument("--quick", action="store_true", help="few tickets per measurement")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    install_sigterm_handler()
    print_machine()
    sizes = [int(s) for s in args.sizes.split(",")]
    server: Server | None = None
    results = []
    try:
        for dialect in args.dialects.split(","):
            if dialect == "postgresql":
                started = start_server()
                if isinstance(started, str):
                    print(f"postgresql skipped: {started}")
                    continue
                server = started

                def make_pg(home: Path, s: Server = server) -> tuple[str | Path, dict[str, str]]:
                    url = s.create_database()
                    return url, {"SWARM_DATABASE_URL": url}

                for h in sizes:
                    results.append(measure(dialect, make_pg, h, args.quick))
            else:

                def make_lite(home: Path) -> tuple[str | Path, dict[str, str]]:
                    subprocess.run([sys.executable, "-m", "swarm_engine", "--home", str(home),
                                    "status", "--init"], capture_output=True, check=True)  # fmt: skip
                    return home / "tickets.db", {}

                for h in sizes:
                    results.append(measure(dialect, make_lite, h, args.quick))
    finally:
        if server is not None:
            server.stop()
    write_json(args.json, {"results": results})


if __name__ == "__main__":
    main()
