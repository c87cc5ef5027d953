"""What the cron task's read of the registry costs the engine, with big workflow rows.

A registry (SQLite) holds `--rows` workflows of about `--mb` MB each without triggers (with
`--triggers`: each with a cron trigger of its own), as any outside client may write, and
one small one with a cron trigger. The engine's cron task (`CronFirer._read_schedules`,
what its daemon runs every 10 s) is run in this process: its first read of the registry,
then rounds while nothing changed, then a round after an unrelated change (an agent
registered by another client), then a round after one row changed. Printed: CPU seconds
and resident memory (RSS, MB) after each phase, and the peak RSS. Run it against another
checkout with `PYTHONPATH=<checkout>/src`.

    .venv/bin/python benchmarks/cron_scan.py --rows 30 --mb 7
    .venv/bin/python benchmarks/cron_scan.py --rows 30 --mb 5 --triggers
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e6


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def _spec(name: str, triggers: list[dict[str, Any]], mb: float) -> str:
    step = {"id": "s", "agent": "echo", "inputs": {"text": "x" * int(mb * 1e6)}}
    return json.dumps({"name": name, "version": "1.0.0", "steps": [step], "triggers": triggers})


def _insert(db: Path, name: str, spec: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "INSERT OR REPLACE INTO workflows (name, version, spec, created_at) VALUES"
        " (?, '1.0.0', ?, strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
        (name, spec),
    )
    conn.close()


def _agent(db: Path, name: str) -> None:
    spec = json.dumps({"name": name, "version": "1.0.0", "kind": "shell", "command": "true"})
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "INSERT INTO agents (name, version, kind, spec) VALUES (?, '1.0.0', 'shell', ?)",
        (name, spec),
    )
    conn.close()


async def _direct(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)  # (the daemon runs store calls on its store thread: same work)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--mb", type=float, default=7.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--triggers", action="store_true", help="big rows declare a trigger")
    args = parser.parse_args()

    from swarm_engine.engine.cron import CronFirer
    from swarm_engine.registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "registry.db"
        registry = Registry(db, Path(tmp) / "packages")
        big = _spec(
            "quiet", [{"name": "quiet", "cron": "0 1 * * *"}] if args.triggers else [], args.mb
        )
        for i in range(args.rows):
            _insert(db, f"quiet{i:03d}", big.replace('"quiet"', f'"quiet{i:03d}"', 2))
        del big
        cron = [{"name": "nightly", "cron": "0 3 * * *"}]
        _insert(db, "nightly", _spec("nightly", cron, 0))
        firer = CronFirer(None, registry, _direct)  # type: ignore[arg-type]
        kind = "each with a cron trigger" if args.triggers else "without triggers"
        print(f"{args.rows} rows of {args.mb} MB {kind}, 1 small with a cron trigger")
        print(f"start: rss {_rss_mb():.0f} MB")

        async def phase(label: str, rounds: int) -> None:
            cpu = time.process_time()
            for _ in range(rounds):
                await firer._read_schedules()
            spent = (time.process_time() - cpu) / rounds
            print(
                f"{label}: {spent:.3f} CPU-s a round, rss {_rss_mb():.0f} MB,"
                f" peak {_peak_mb():.0f} MB, schedules {len(firer._schedules)}"
            )

        await phase("first read (x1)", 1)
        passes = 1
        while (firer._scan is not None or not firer._schedules) and passes < 50:  # (cut)
            await phase("first read, next round", 1)
            passes += 1
        await phase(f"unchanged (x{args.rounds})", args.rounds)
        _agent(db, "unrelated")
        await phase("after an agent registered (x1)", 1)
        while firer._scan is not None:  # (a pass cut in rounds)
            await phase("after an agent registered, next round", 1)
        _insert(db, "nightly", _spec("nightly", [{"name": "nightly", "cron": "0 4 * * *"}], 0))
        await phase("after one row changed (x1)", 1)
        registry.close()


if __name__ == "__main__":
    asyncio.run(main())
