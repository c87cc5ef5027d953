"""Store scale: PostgreSQL next to SQLite, and 1 to 4 engines on one PostgreSQL database.

Three measurements in one run, each on a fresh database (a new SQLite file, or a new
database on one throwaway PostgreSQL server: `tests/support/postgres.start_server()`, or
the server `SWARM_TEST_POSTGRES_URL` names):

1. Claims per second, through the store API. N open `echo` tickets are inserted, then
   C threads (each with its own `open_store`) call `tickets.claim_next(limit=K,
   lease_ttl=30)` until nothing is open; rate = N / (barrier release -> last thread done).
   Every ticket must be claimed exactly once (the ids the threads got, and the rows).
2. Dispatch latency. One idle engine (`start --foreground --max-vms 4`); an outside
   writer (`sqlite3`, or `psql`) inserts one `echo` ticket at a time, after an idle gap
   (0.2 s and 1 s by default), once the previous one is done. Latency = `claimed_at -
   created_at` as the database recorded them (SQLite: ms text; PostgreSQL: timestamptz).
   On PostgreSQL also created_at -> when a LISTEN connection of this script got the
   ticket's NOTIFY: the floor under the engine's wake-up.
3. Throughput with 1, 2, 3 and 4 engines on one PostgreSQL database: M open `echo`
   tickets, then E engine processes started at once (each its own home and host id,
   `start --foreground --until-idle --max-vms 4`). Rate = M / (first engine start ->
   last `completed_at`); also M / (first `claimed_at` -> last `completed_at`). SQLite
   with one engine is the baseline; ratios are against one engine on PostgreSQL. The
   host's CPU (busy, iowait; every process) over each run, from /proc/stat.
4. (`--only savepoint`, PostgreSQL only) what a write's SAVEPOINT costs: ticket
   lifecycles through the store API, this checkout against each `--src PATH` (another
   checkout's `src/`), and the raw statements with and without SAVEPOINT
   (`_lifecycles.py`).

PostgreSQL durability: the test helper starts its throwaway server with fsync,
full_page_writes and synchronous_commit off; this script restarts it without those
options (a stock server, fsync on; `--pg-fast` keeps them) and measures each PostgreSQL
figure with `synchronous_commit` on (the default: each commit waits for its WAL flush)
and off (`--pg-sync`; off may lose the last few commits on a crash and never corrupts,
which is what SQLite's WAL with `synchronous = NORMAL`, the store's setting, promises).
A server named by SWARM_TEST_POSTGRES_URL is used as it is (its settings are printed).

Usage: python benchmarks/store_scale.py [-n 5000] [-m 400] [--per-gap 0.2:25,1:25]
       [--engines 1,2,3,4] [--pg-sync on,off] [--rounds 2] [--pg-fast]
       [--only claims,latency,throughput,savepoint] [--lifecycles 300] [--src PATH]
       [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    connect,
    engine_log,
    insert_tickets,
    install_sigterm_handler,
    load1,
    parse_ts,
    percentile,
    print_machine,
    query,
    start_engine,
    stop_engine,
    swarm,
    temp_root,
    wait_until,
    write_json,
)
from _lifecycles import child, raw_savepoint

from swarm_engine.store import Store, open_database, open_store

sys.path.insert(0, str(REPO))  # tests.support.postgres: the throwaway server and psql
from tests.support.postgres import Server, psql, start_server

ECHO_INSERT = "INSERT INTO tickets (title, status, agent_id, inputs) VALUES ('lat', 'open', 'echo', '{\"i\": 1}') RETURNING id;"


@dataclass(frozen=True)
class Target:
    """Where tickets live: SQLite, or PostgreSQL with a synchronous_commit setting."""

    dialect: str  # "sqlite" or "postgresql"
    sync: str = ""  # PostgreSQL's synchronous_commit for this database: "on" or "off"

    @property
    def label(self) -> str:
        return "SQLite" if self.dialect == "sqlite" else f"PostgreSQL (sync {self.sync})"


class Stores:
    """Fresh databases: SQLite files under `root`, PostgreSQL databases on `server`."""

    def __init__(self, root: Path, server: Server) -> None:
        self.root = root
        self.server = server
        self.count = 0

    def fresh(self, target: Target) -> str:
        """A new, migrated, empty ticket store (and registry): its path or URL."""
        self.count += 1
        if target.dialect == "sqlite":
            path = self.root / f"store-{self.count}.db"
            open_store(path).close()
            return str(path)
        url = self.server.create_database()
        name = url.rsplit("/", 1)[1]
        psql(url, f"ALTER DATABASE {name} SET synchronous_commit = {target.sync}")
        open_store(url).close()
        open_database(url, "registry").close()
        return url


def is_pg(store: str) -> bool:
    return store.startswith("postgresql://")


def open_target(store: str) -> Store:
    return open_store(store if is_pg(store) else Path(store))


def rows(store: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Query either store (`?` placeholders), on a connection of its own."""
    if not is_pg(store):
        return query(Path(store), sql, *args)
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(store, autocommit=True, row_factory=dict_row) as conn:
        return list(conn.execute(sql.replace("?", "%s"), args).fetchall())


def insert_open(store: str, m: int) -> None:
    """M open echo tickets in one transaction, as an outside client writes them."""
    if is_pg(store):
        psql(store, "INSERT INTO tickets (title, status, agent_id, inputs)"
                    f" SELECT 'bench-' || g, 'open', 'echo', jsonb_build_object('i', g)"
                    f" FROM generate_series(1, {m}) g")  # fmt: skip
    else:
        insert_tickets(Path(store), "echo", [{"i": i} for i in range(m)])


# -- 1. claims per second --------------------------------------------------------------------
def claim_run(store: str, n: int, claimers: int, limit: int) -> dict[str, Any]:
    insert_open(store, n)
    expected = {int(r["id"]) for r in rows(store, "SELECT id FROM tickets")}
    got: list[list[int]] = [[] for _ in range(claimers)]
    ended = [0.0] * claimers
    errors: list[BaseException] = []
    ready = threading.Barrier(claimers + 1)

    def claimer(i: int) -> None:
        try:
            s = open_target(store)
        except BaseException as exc:
            errors.append(exc)
            ready.abort()
            return
        try:
            eid = f"bench-{i}-{uuid.uuid4().hex[:8]}"
            ready.wait(timeout=60)
            while True:
                claimed = s.tickets.claim_next(
                    engine_id=eid, attempt_id=eid, lease_ttl=30, limit=limit
                )
                if claimed:
                    got[i].extend(t.id for t in claimed)
                elif s.tickets.counts().get("open", 0) == 0:
                    break  # (SKIP LOCKED can return nothing while others still hold rows)
            ended[i] = time.perf_counter()
        except BaseException as exc:
            errors.append(exc)
            ready.abort()
        finally:
            s.close()

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(claimers)]
    for t in threads:
        t.start()
    try:
        ready.wait(timeout=60)
    except threading.BrokenBarrierError:
        for t in threads:
            t.join()
        raise errors[0] if errors else RuntimeError("a claimer did not start") from None
    started = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    elapsed = max(ended) - started
    ids = [tid for part in got for tid in part]
    state = rows(
        store, "SELECT count(*) AS n FROM tickets WHERE status = 'claimed' AND attempts = 1"
    )
    once = len(ids) == len(set(ids)) == n and set(ids) == expected and state[0]["n"] == n
    if not once:
        raise RuntimeError(
            f"claims not exactly once: {len(ids)} claimed, {len(set(ids))} distinct,"
            f" {state[0]['n']} rows claimed once, {n} tickets"
        )
    return {"n": n, "claimers": claimers, "limit": limit, "seconds": elapsed,
            "rate": n / elapsed, "per_claimer": [len(p) for p in got], "exactly_once": once}  # fmt: skip


# -- the engine, on SQLite or PostgreSQL -----------------------------------------------------
def engine_env(store: str, host: str) -> dict[str, str]:
    if store and is_pg(store):
        return {"SWARM_DATABASE_URL": store, "SWARM_HOST_ID": host}
    return {"SWARM_HOST_ID": host}


def engine_stores(
    root: Path, stores: Stores, target: Target, hosts: list[str]
) -> tuple[str, list[Path]]:
    """A fresh store and one initialised home per host: on SQLite one home whose
    tickets.db is the store, on PostgreSQL one database and a home per host."""
    store = stores.fresh(target) if target.dialect == "postgresql" else ""
    homes = []
    for host in hosts:
        home = root / f"home-{uuid.uuid4().hex[:8]}"
        swarm(home, "status", "--init", **engine_env(store, host))
        homes.append(home)
    return (store or str(homes[0] / "tickets.db")), homes


# -- 2. dispatch latency ---------------------------------------------------------------------
LATENCY_SQL = {
    "sqlite": "SELECT status, claimed_at, created_at FROM tickets WHERE id = ?",
    "postgresql": "SELECT status, extract(epoch FROM claimed_at - created_at) * 1000 AS ms,"
    " extract(epoch FROM created_at) AS created FROM tickets WHERE id = %(id)s",
}


class Listener:
    """`LISTEN swarm_tickets` on a connection of its own, as the engine does: when each
    ticket's notification arrived here (host clock), the floor under the engine's pick-up."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("LISTEN swarm_tickets")
        self.arrived: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for note in self.conn.notifies(timeout=0.2):
                self.arrived.setdefault(int(note.payload), time.time())

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.conn.close()


def latency_run(
    root: Path, stores: Stores, target: Target, per_gap: dict[float, int], warmup: int
) -> dict[str, Any]:
    """Per gap, the tickets' claimed_at - created_at (ms); on PostgreSQL also when a
    listener of our own got each ticket's notification, after created_at (ms)."""
    store, (home,) = engine_stores(root, stores, target, ["bench-latency"])
    pg = target.dialect == "postgresql"
    listener = Listener(store) if pg else None
    if pg:
        import psycopg

        reader: Any = psycopg.connect(store, autocommit=True)
    else:
        reader = connect(Path(store))
    proc = start_engine(home, "--max-vms", "4", log=home / "engine-bench.log",
                        **engine_env(store, "bench-latency"))  # fmt: skip
    notify_ms: list[float] = []

    def status_of(tid: int) -> tuple[Any, ...]:
        if pg:
            return tuple(reader.execute(LATENCY_SQL["postgresql"], {"id": tid}).fetchone())
        return tuple(reader.execute(LATENCY_SQL["sqlite"], (tid,)).fetchone())

    def one() -> float:
        if pg:
            tid = int(psql(store, ECHO_INSERT))
        else:
            out = subprocess.run(["sqlite3", "-cmd", ".timeout 5000", store, ECHO_INSERT],
                                 capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
            tid = int(out.stdout.strip())
        deadline = time.monotonic() + 60
        while (row := status_of(tid))[0] not in ("done", "failed"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ticket {tid}: still {row[0]} (engine exit {proc.poll()})")
            time.sleep(0.005)  # sleep-ok: polling the store from outside, as a client would
        if row[0] != "done":
            raise RuntimeError(f"ticket {tid} {row[0]}")
        if listener is None:
            return (parse_ts(row[1]) - parse_ts(row[2])) * 1000
        if tid in listener.arrived:
            notify_ms.append((listener.arrived[tid] - float(row[2])) * 1000)
        return float(row[1])

    samples: dict[str, list[float]] = {}
    try:
        wait_until(
            lambda: rows(store, "SELECT 1 FROM engines WHERE pid = ? AND state = 'running'",
                         proc.pid),
            30, "the engine to register", proc,
        )  # fmt: skip
        for _ in range(warmup):
            one()
        notify_ms.clear()
        for gap, count in per_gap.items():
            got = samples.setdefault(f"{gap:g}", [])
            for _ in range(count):
                time.sleep(gap)  # sleep-ok: the idle gap before the insert
                got.append(one())
    except BaseException:
        print(engine_log(home))
        raise
    finally:
        reader.close()
        if listener is not None:
            listener.close()
        stop_engine(proc)
    return {"samples": samples, "notify_ms": notify_ms}


# -- 3. throughput with several engines ------------------------------------------------------
def cpu_times() -> list[int]:
    """The host's CPU time so far (user, nice, system, idle, iowait, ...), from /proc/stat."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def cpu_share(before: list[int], after: list[int]) -> dict[str, float]:
    """The host's CPUs (all processes, not only ours) between two samples: % busy (not
    idle, iowait or stolen by the hypervisor) and % iowait."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta[:8]) or 1  # guest time is already counted in user
    return {"cpu_busy": 100 * (total - delta[3] - delta[4] - delta[7]) / total,
            "cpu_iowait": 100 * delta[4] / total}  # fmt: skip


SPAN_SQL = {
    "sqlite": "SELECT min(claimed_at) AS first_claim, max(completed_at) AS last_done FROM tickets",
    "postgresql": "SELECT extract(epoch FROM min(claimed_at)) AS first_claim,"
    " extract(epoch FROM max(completed_at)) AS last_done FROM tickets",
}


def throughput_run(
    root: Path, stores: Stores, target: Target, m: int, engines: int
) -> dict[str, Any]:
    store, homes = engine_stores(root, stores, target, [f"bench-host-{i}" for i in range(engines)])
    hosts = [f"bench-host-{i}" for i in range(engines)]
    insert_open(store, m)
    procs = []
    cpu0 = cpu_times()
    t0 = time.time()
    try:
        for home, host in zip(homes, hosts, strict=True):
            procs.append(start_engine(home, "--until-idle", "--max-vms", "4",
                                      log=home / "engine-bench.log",
                                      **engine_env(store, host)))  # fmt: skip
        codes = [p.wait(timeout=120 + m) for p in procs]
        wall = time.time() - t0
        cpu = cpu_share(cpu0, cpu_times())
    except BaseException:
        for home in homes:
            print(engine_log(home))
        raise
    finally:
        for p in procs:
            stop_engine(p)
    if any(codes):
        raise RuntimeError(f"engines exited {codes}:\n{engine_log(homes[0])}")
    counts = {r["status"]: int(r["n"]) for r in
              rows(store, "SELECT status, count(*) AS n FROM tickets GROUP BY status")}  # fmt: skip
    again = rows(store, "SELECT count(*) AS n FROM tickets WHERE attempts <> 1")[0]["n"]
    if counts != {"done": m} or again:
        raise RuntimeError(f"not every ticket done once: {counts}, {again} with attempts <> 1")
    span = rows(store, SPAN_SQL[target.dialect])[0]
    if target.dialect == "sqlite":
        first, last = parse_ts(span["first_claim"]), parse_ts(span["last_done"])
    else:
        first, last = float(span["first_claim"]), float(span["last_done"])
    per_engine = sorted(
        (int(r["n"]) for r in rows(store, "SELECT engine_id, count(*) AS n FROM tickets GROUP BY engine_id")),
        reverse=True,
    )  # fmt: skip
    return {"target": target.label, "engines": engines, "m": m, "to_last_done_s": last - t0,
            "rate": m / (last - t0), "span_s": last - first, "span_rate": m / (last - first),
            "wall_s": wall, "per_engine": per_engine, **cpu}  # fmt: skip


# -- the run ---------------------------------------------------------------------------------
def pg_server(durable: bool) -> Server:
    """The throwaway server; `durable`: restarted without the test helper's fsync=off,
    full_page_writes=off, synchronous_commit=off (command-line options, which ALTER
    SYSTEM cannot override), i.e. with PostgreSQL's stock durability settings."""
    server = start_server()
    if isinstance(server, str):
        raise SystemExit(f"no PostgreSQL server: {server}")
    if durable and server.folder is not None and server.bindir is not None:
        options = (
            f"-k {server.folder} -c listen_addresses={server.host} -p {server.port}"
            " -c max_connections=200"
        )
        argv = [str(server.bindir / "pg_ctl"), "-D", str(server.folder / "data"), "-o", options,
                "-l", str(server.folder / "log"), "-m", "fast", "-w", "-t", "60", "restart"]  # fmt: skip
        if server.owner is not None and os.geteuid() == 0:
            argv = ["runuser", "-u", server.owner, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            server.stop()
            raise SystemExit(f"restarting PostgreSQL failed: {done.stderr.strip()}")
    return server


def server_settings(server: Server) -> dict[str, str]:
    out = {}
    for name in ("server_version", "fsync", "full_page_writes", "synchronous_commit",
                 "shared_buffers", "max_connections"):  # fmt: skip
        out[name] = psql(server.url(), f"SHOW {name}")
    return out


def parse_per_gap(text: str) -> dict[float, int]:
    out: dict[float, int] = {}
    for part in text.split(","):
        gap, _, count = part.partition(":")
        out[float(gap)] = int(count)
    return out


def every_sample(result: dict[str, Any]) -> list[float]:
    return [v for values in result["samples"].values() for v in values]


def lat_stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values)}  # fmt: skip


def measure_claims(stores: Stores, targets: list[Target], args: argparse.Namespace) -> list[Any]:
    print(f"\n1. claims/s, {args.n} open tickets, claim_next until none is left", flush=True)
    out = []
    for rnd in range(1, args.rounds + 1):
        for target in targets:
            for c in args.claimers:
                for k in args.limits:
                    load = load1()
                    r = claim_run(stores.fresh(target), args.n, c, k)
                    out.append({"target": target.label, "round": rnd, "load1": load, **r})
                    print(f"  round {rnd} {target.label:<24} claimers {c} limit {k}:"
                          f" {r['rate']:6.0f}/s ({r['seconds']:.2f} s, per claimer"
                          f" {r['per_claimer']}, exactly once)", flush=True)  # fmt: skip
    return out


def measure_latency(
    root: Path, stores: Stores, targets: list[Target], args: argparse.Namespace
) -> dict[str, Any]:
    print("\n2. dispatch latency, claimed_at - created_at, ms", flush=True)
    out = {}
    for target in targets:
        load = load1()
        out[target.label] = {"load1": load, **latency_run(root, stores, target, args.gaps, 2)}
        st = lat_stats(every_sample(out[target.label]))
        print(f"  {target.label:<24} n {st['n']:>3}  p50 {st['p50']:6.1f}  p95 {st['p95']:6.1f}"
              f"  p99 {st['p99']:6.1f}  (load {load:.2f})", flush=True)  # fmt: skip
    return out


def measure_throughput(
    root: Path, stores: Stores, targets: list[Target], args: argparse.Namespace
) -> list[Any]:
    print(f"\n3. throughput, {args.m} echo tickets, --max-vms 4 per engine", flush=True)
    runs = [(targets[0], 1)] + [(t, e) for t in targets[1:] for e in args.engines]
    out = []
    for rnd in range(1, args.rounds + 1):
        for target, e in runs:
            load = load1()
            r = throughput_run(root, stores, target, args.m, e)
            out.append({"round": rnd, "load1": load, **r})
            print(f"  round {rnd} {target.label:<24} engines {e}: {r['rate']:5.1f}/s"
                  f" (start -> last done {r['to_last_done_s']:.2f} s), span {r['span_rate']:.1f}/s,"
                  f" per engine {r['per_engine']}, CPU busy {r['cpu_busy']:.0f} %"
                  f" (iowait {r['cpu_iowait']:.0f} %), load {load:.2f}", flush=True)  # fmt: skip
    return out


# -- 4. what a write's savepoint costs -------------------------------------------------------
def measure_savepoint(stores: Stores, targets: list[Target], args: argparse.Namespace) -> Any:
    """Lifecycles per code (this checkout, then each `--src`) and raw transactions, on
    fresh databases (not migrated here: each child's code migrates its own), in rounds."""
    codes: list[tuple[str, str | None]] = [("this checkout", None)]
    codes += [(src, src) for src in args.src]
    out: dict[str, Any] = {"lifecycles": [], "raw": [], "counts": {}}
    for t in targets:
        if t.dialect != "postgresql":
            continue
        for label, src in codes:
            out["counts"][label] = child(src, bare_database(stores, t), 1, count=True)
        for r in range(args.rounds):
            for label, src in codes if r % 2 == 0 else codes[::-1]:
                got = child(src, bare_database(stores, t), args.lifecycles)
                assert got["done"] == args.lifecycles, got
                print(f"  {t.label} {label}: {got['seconds'] * 1000 / got['n']:.2f} ms a"
                      f" lifecycle ({got['imported']})", flush=True)  # fmt: skip
                out["lifecycles"].append({"target": t.label, "code": label, **got})
            url = stores.fresh(t)
            out["raw"].append({"target": t.label, **raw_savepoint(url, args.lifecycles * 4)})
    return out


def bare_database(stores: Stores, target: Target) -> str:
    """A new, empty PostgreSQL database with `target`'s synchronous_commit (no schema)."""
    url = stores.server.create_database()
    name = url.rsplit("/", 1)[1]
    psql(url, f"ALTER DATABASE {name} SET synchronous_commit = {target.sync}")
    return url


def report_savepoint(result: dict[str, Any]) -> None:
    if not result:
        return
    print("\nticket lifecycles through the store API, an engine's writes for a one-step"
          " ticket (_lifecycles.py), median (min-max) over rounds; x = ms / this checkout's"
          " ms")  # fmt: skip
    print(f"{'store':<24}{'code':<34}{'ms/lifecycle':>22}{'writes/s':>18}{'x':>6}")
    for target in dict.fromkeys(r["target"] for r in result["lifecycles"]):
        mine = [r for r in result["lifecycles"] if r["target"] == target]
        base = statistics.median(r["seconds"] / r["n"] for r in mine
                                 if r["code"] == "this checkout")  # fmt: skip
        for code in dict.fromkeys(r["code"] for r in mine):
            runs = [r for r in mine if r["code"] == code]
            ms = [r["seconds"] * 1000 / r["n"] for r in runs]
            writes = result["counts"][code]["writes"]
            rate = [r["n"] * writes / r["seconds"] for r in runs]
            print(
                f"{target:<24}{code[-33:]:<34}{spread(ms, '.2f'):>22}"
                f"{spread(rate, '.0f'):>18}{statistics.median(ms) / 1000 / base:>6.3f}"
            )
    for code, seen in result["counts"].items():
        print(f"one lifecycle, {code}: {seen['round_trips']} round trips, {seen['writes']}"
              f" writes, {seen['savepoints']} savepoints")  # fmt: skip
    print("raw: a transaction of one UPDATE tickets SET status, µs, median: bare; nested"
          " (SAVEPOINT, UPDATE, RELEASE); savepoint (SAVEPOINT, UPDATE; the commit releases"
          " it); x = against bare")  # fmt: skip
    for r in result["raw"]:
        bare = r["bare_us"]
        print(f"{r['target']:<24}n {r['n']:>6}  bare {bare:7.1f}  nested {r['nested_us']:7.1f}"
              f" (x {r['nested_us'] / bare:.3f})  savepoint {r['savepoint_us']:7.1f}"
              f" (x {r['savepoint_us'] / bare:.3f})")  # fmt: skip


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="tickets per claim run (default 5000)")
    parser.add_argument("-m", type=int, default=400, help="tickets per throughput run (400)")
    parser.add_argument("--claimers", type=ints, default=[1, 4], help="claimer threads (1,4)")
    parser.add_argument("--limits", type=ints, default=[1, 4], help="claim_next limits (1,4)")
    parser.add_argument("--per-gap", dest="gaps", type=parse_per_gap, default="0.2:25,1:25",
                        help="latency: GAP_SECONDS:TICKETS,... per store (default %(default)s)")  # fmt: skip
    parser.add_argument("--engines", type=ints, default=[1, 2, 3, 4], help="engines on PG")
    parser.add_argument("--pg-sync", default="on,off",
                        help="PostgreSQL synchronous_commit values to measure (default on,off)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of claims and throughput, interleaved (default 2)")  # fmt: skip
    parser.add_argument("--pg-fast", action="store_true",
                        help="keep the test server's fsync=off, full_page_writes=off (not durable)")  # fmt: skip
    parser.add_argument("--only", default="claims,latency,throughput",
                        help="which measurements to run (default %(default)s)")  # fmt: skip
    parser.add_argument("--lifecycles", type=int, default=300,
                        help="savepoint: ticket lifecycles per child (300)")  # fmt: skip
    parser.add_argument("--src", action="append", default=[],
                        help="savepoint: also run this src/ folder's store (repeatable)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    install_sigterm_handler()
    if args.quick:
        args.n, args.m, args.engines, args.rounds = 300, 40, [1, 2], 1
        args.gaps = {0.2: 5, 1.0: 3}
        args.lifecycles = 30
    targets = [Target("sqlite")] + [Target("postgresql", s) for s in args.pg_sync.split(",")]

    print_machine()
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                            capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    loads = {"before": load1()}
    server = pg_server(durable=not args.pg_fast)
    try:
        settings = server_settings(server)
        print(f"code: {commit} | PostgreSQL: "
              + " | ".join(f"{k} {v}" for k, v in settings.items()), flush=True)  # fmt: skip
        with temp_root("store-scale") as root:
            stores = Stores(root, server)
            only = args.only.split(",")
            claims = measure_claims(stores, targets, args) if "claims" in only else []
            loads["after claims"] = load1()
            latency = measure_latency(root, stores, targets, args) if "latency" in only else {}
            loads["after latency"] = load1()
            throughput = (
                measure_throughput(root, stores, targets, args) if "throughput" in only else []
            )
            loads["after throughput"] = load1()
            savepoint = measure_savepoint(stores, targets, args) if "savepoint" in only else {}
            loads["after"] = load1()
    finally:
        server.stop()
    report(claims, latency, throughput, targets, args.engines)
    report_savepoint(savepoint)
    print("load average (1 min): " + ", ".join(f"{k} {v:.2f}" for k, v in loads.items()))
    write_json(args.json, {"benchmark": "store_scale", "code": commit, "postgresql": settings,
                           "loads": loads, "claims": claims, "latency_samples_ms": latency,
                           "latency": {k: lat_stats(every_sample(v)) for k, v in latency.items()},
                           "throughput": throughput, "savepoint": savepoint})  # fmt: skip


def spread(values: list[float], fmt: str) -> str:
    """The median, and the range when there are several values."""
    mid = format(statistics.median(values), fmt)
    if len(values) < 2:
        return mid
    return f"{mid} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def report(
    claims: list[dict[str, Any]],
    latency: dict[str, dict[str, Any]],
    throughput: list[dict[str, Any]],
    targets: list[Target],
    engine_counts: list[int],
) -> None:
    if claims:
        report_claims(claims, targets)
    if latency:
        report_latency(latency)
    if throughput:
        report_throughput(throughput, targets, engine_counts)


def report_claims(claims: list[dict[str, Any]], targets: list[Target]) -> None:
    print("\nclaims/s, median (min-max) over rounds; every ticket claimed exactly once")
    configs = sorted({(r["claimers"], r["limit"]) for r in claims})
    print(f"{'store':<24}" + "".join(f"{f'{c} x limit {k}':>20}" for c, k in configs))
    for t in targets:
        cells = []
        for c, k in configs:
            rates = [r["rate"] for r in claims if r["target"] == t.label and
                     (r["claimers"], r["limit"]) == (c, k)]  # fmt: skip
            cells.append(f"{spread(rates, '.0f'):>20}")
        print(f"{t.label:<24}" + "".join(cells))


def report_latency(latency: dict[str, dict[str, Any]]) -> None:
    print("\ndispatch latency, claimed_at - created_at (ms)")
    print(f"{'store':<26}{'gap':>6}{'n':>5}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}")
    for label, result in latency.items():
        groups = [*result["samples"].items(), ("all", every_sample(result))]
        if result["notify_ms"]:
            groups.append(("notify", result["notify_ms"]))
        for gap, values in groups:
            st = lat_stats(values)
            print(f"{label:<26}{gap:>6}{st['n']:>5}" + "".join(
                f"{st[k]:>8.1f}" for k in ("p50", "p95", "p99", "max")))  # fmt: skip
    print("(notify: created_at -> a LISTEN client of this script got the ticket's NOTIFY)")


def report_throughput(
    throughput: list[dict[str, Any]], targets: list[Target], engine_counts: list[int]
) -> None:
    print("\nthroughput, tickets/s, median (min-max) over rounds: rate = M / (first engine"
          " start -> last completed_at), span = M / (first claimed_at -> last completed_at);"
          " x1 = rate / 1 engine on PostgreSQL with the same sync (SQLite: against sync on);"
          " busy, iowait: the host's CPUs during the run (every process), medians")  # fmt: skip
    print(f"{'store':<24}{'engines':>8}{'rate':>20}{'span':>20}{'x1':>6}{'busy':>6}{'iowait':>7}"
          "  tickets per engine")  # fmt: skip
    for t in targets:
        base_label = t.label if t.dialect == "postgresql" else targets[1].label
        base = [r["rate"] for r in throughput if r["engines"] == 1 and r["target"] == base_label]
        for e in [1] if t.dialect == "sqlite" else engine_counts:
            mine = [r for r in throughput if r["target"] == t.label and r["engines"] == e]
            if not mine:
                continue
            rate = [r["rate"] for r in mine]
            ratio = statistics.median(rate) / statistics.median(base) if base else math.nan
            busy = statistics.median(r["cpu_busy"] for r in mine)
            iowait = statistics.median(r["cpu_iowait"] for r in mine)
            print(f"{t.label:<24}{e:>8}{spread(rate, '.1f'):>20}"
                  f"{spread([r['span_rate'] for r in mine], '.1f'):>20}{ratio:>6.2f}"
                  f"{busy:>5.0f}%{iowait:>6.0f}%  "
                  + " ".join("/".join(map(str, r["per_engine"])) for r in mine))  # fmt: skip


if __name__ == "__main__":
    main()
