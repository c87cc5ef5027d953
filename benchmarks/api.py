"""The HTTP API on a large store, and live-log latency over server-sent events.

For each store (SQLite; PostgreSQL when a server can be started, see
tests/support/postgres.py), in a fresh database holding 100,000 tickets (finished ones,
with 1,000 open and 1,000 failed among them):

1. `swarm-engine serve` on a free port; each of these requests N times, interleaved, timed
   by the client (wall time, keep-alive connection): the first page of `GET /v1/tickets`
   (50 newest), a page of `?status=failed`, a page 1,000 pages deep (by cursor), `GET
   /v1/tickets/{id}`, `GET /v1/status`, `GET /metrics`, and the web dashboard's ticket
   list page (`/ui`, server-rendered HTML, and the rows it refreshes every 2 s); p50 and p95 in ms.
2. SSE latency: an engine and the server; a shell agent prints a line holding the time it
   was printed (`date +%s%N`, in the sandbox) every 0.2 s, 20 times; a client following
   `GET /v1/tickets/{id}/logs/stream` notes when each line arrives. Latency = arrival -
   printed time (the same host clock); p50, p95, max.

Usage: python benchmarks/api.py [-n 200] [--dialects sqlite,postgresql] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
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
    write_json,
)

sys.path.insert(0, str(REPO))
from tests.support.api import Api, sse_events, start_api
from tests.support.postgres import Server, start_server

from swarm_engine.store import open_store

TICKETS = 100_000

FILL_SQLITE = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
INSERT INTO tickets (title, status, agent_id, attempts, result, completed_at)
SELECT 'old ' || i,
       CASE WHEN i % 100 = 1 THEN 'failed' WHEN i % 100 = 2 THEN 'draft' ELSE 'done' END,
       'echo', 1, '{{}}', '2026-01-01T00:00:01.000Z' FROM n;
ANALYZE;
"""
FILL_POSTGRES = """
INSERT INTO tickets (title, status, agent_id, attempts, result, completed_at)
SELECT 'old ' || i,
       CASE WHEN i % 100 = 1 THEN 'failed' WHEN i % 100 = 2 THEN 'draft' ELSE 'done' END,
       'echo', 1, '{}', '2026-01-01T00:00:01Z' FROM generate_series(1, %(n)s) i;
ANALYZE;
"""


def fill(target: str | Path) -> None:
    open_store(target).close()
    if isinstance(target, str):
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            for statement in FILL_POSTGRES.split(";"):
                if statement.strip():
                    conn.execute(statement.replace("%(n)s", str(TICKETS)))  # type: ignore[call-overload]
    else:
        import sqlite3

        conn = sqlite3.connect(target)
        conn.executescript(FILL_SQLITE.format(n=TICKETS))
        conn.close()


def timed(api: Api, path: str) -> float:
    t0 = time.perf_counter()
    answer = api.get(path)
    elapsed = (time.perf_counter() - t0) * 1000
    if answer.status_code != 200:
        raise RuntimeError(f"GET {path}: {answer.status_code} {answer.text[:200]}")
    return elapsed


def requests_table(api: Api, n: int) -> dict[str, dict[str, float]]:
    deep = api.get("/v1/tickets?limit=50").json()["items"][-1]["id"] - 50 * 1000
    paths = {
        "tickets, first page": "/v1/tickets?limit=50",
        "tickets, status=failed": "/v1/tickets?status=failed&limit=50",
        "tickets, 1,000 pages deep": f"/v1/tickets?limit=50&cursor={deep}",
        "one ticket": "/v1/tickets/4242",
        "status": "/v1/status",
        "metrics": "/metrics",
    }
    page = api.get("/ui")
    if page.status_code == 200 and "html" in page.headers.get("content-type", ""):
        paths["dashboard: ticket list page"] = "/ui"
        paths["dashboard: rows refresh"] = "/ui/tickets/rows"
    times: dict[str, list[float]] = {name: [] for name in paths}
    for path in paths.values():  # warm-up
        timed(api, path)
    for _ in range(n):
        for name, path in paths.items():
            times[name].append(timed(api, path))
    return {
        name: {"p50": round(percentile(v, 50), 2), "p95": round(percentile(v, 95), 2)}
        for name, v in times.items()
    }


def sse_latency(home: Path, api: Api, env: dict[str, str], lines: int = 20) -> list[float]:
    folder = home.parent / "ticker"
    folder.mkdir()
    (folder / "agent.yaml").write_text(
        "name: ticker\nkind: shell\n"
        f'command: "for i in $(seq {lines}); do date +%s%N; sleep 0.2; done"\n'
    )
    import subprocess

    subprocess.run([sys.executable, "-m", "swarm_engine", "--home", str(home), "agent",
                    "register", str(folder)], env={**_env(env)}, check=True,
                   capture_output=True)  # fmt: skip
    ticket = api.post("/v1/tickets", json={"title": "tick", "agent": "ticker"}).json()["id"]
    engine = start_engine(home, "--max-vms", "1", **env)
    got: list[float] = []
    try:
        with api.session.get(f"{api.url}/v1/tickets/{ticket}/logs/stream", stream=True,
                             timeout=120) as stream:  # fmt: skip
            for event in sse_events(stream):
                now = time.time_ns()
                if event.get("event") == "end":
                    break
                if event.get("event") != "log":
                    continue
                try:
                    data = json.loads(event.get("data", "null"))
                except json.JSONDecodeError:
                    continue
                text = data.get("text", "") if isinstance(data, dict) else ""
                for line in str(text).split():
                    if line.isdigit() and len(line) >= 18:
                        got.append((now - int(line)) / 1e6)
                if len(got) >= lines:
                    break
    finally:
        stop_engine(engine)
    return got


def _env(extra: dict[str, str]) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    env.update(extra)
    return env


def measure(
    dialect: str, target: str | Path, env: dict[str, str], home: Path, n: int
) -> dict[str, Any]:
    fill(target)
    api = start_api(home, **env)
    try:
        table = requests_table(api, n)
        sse = sse_latency(home, api, env)
    finally:
        api.stop()
    result = {"dialect": dialect, "tickets": TICKETS, "requests_ms": table, "load1": load1(),
              "sse_ms": {"n": len(sse), "p50": round(statistics.median(sse), 1),
                         "p95": round(percentile(sse, 95), 1), "max": round(max(sse), 1)}}  # fmt: skip
    print(f"{dialect}: {TICKETS:,} tickets, n={n} per request (load {result['load1']})")
    for name, t in table.items():
        print(f"  {name:28} p50 {t['p50']:7.2f} ms   p95 {t['p95']:7.2f} ms")
    print(f"  SSE log line, printed -> received: p50 {result['sse_ms']['p50']} ms,"
          f" p95 {result['sse_ms']['p95']} ms, max {result['sse_ms']['max']} ms"
          f" (n={len(sse)})", flush=True)  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="requests of each kind")
    parser.add_argument("--dialects", default="sqlite,postgresql")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    install_sigterm_handler()
    print_machine()
    results = []
    server: Server | None = None
    try:
        for dialect in args.dialects.split(","):
            with temp_root(f"api-{dialect}") as root:
                home = root / "home"
                if dialect == "postgresql":
                    started = start_server()
                    if isinstance(started, str):
                        print(f"postgresql skipped: {started}")
                        continue
                    server = started
                    url = server.create_database()
                    env = {"SWARM_DATABASE_URL": url}
                    target: str | Path = url
                else:
                    env, target = {}, home / "tickets.db"
                home.mkdir()
                import subprocess

                subprocess.run([sys.executable, "-m", "swarm_engine", "--home", str(home),
                                "status", "--init"], env=_env(env), check=True,
                               capture_output=True)  # fmt: skip
                results.append(measure(dialect, target, env, home, args.n))
    finally:
        if server is not None:
            server.stop()
    write_json(args.json, {"results": results})


if __name__ == "__main__":
    main()
