"""What the benchmarks share: throw-away engine homes, engine processes, timestamps, stats.

Every benchmark drives the real `swarm-engine` command as a subprocess (like a user),
writes tickets with a plain `sqlite3` connection (like any outside client) and reads the
timestamps the engine recorded. Homes live in a temporary folder that is removed on
exit, also on Ctrl-C or SIGTERM; engines are stopped (drain, abort, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]


# -- process hygiene -------------------------------------------------------------------------
def _sigterm_to_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install_sigterm_handler() -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` (engine stop, rmtree) runs."""
    signal.signal(signal.SIGTERM, _sigterm_to_exit)


@contextlib.contextmanager
def temp_root(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"swarm-bench-{prefix}-") as tmp:
        yield Path(tmp)


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    env["SWARM_HOME"] = str(home)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def swarm(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "swarm_engine", *args],
        env=env_for(home, **env),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"swarm-engine {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done


def init_home(home: Path) -> Path:
    """Create the home's databases; returns tickets.db."""
    swarm(home, "status", "--init")
    return home / "tickets.db"


def start_engine(
    home: Path, *args: str, log: Path | None = None, **env: str
) -> subprocess.Popen[bytes]:
    """`start --foreground ARGS` in its own session; its output goes to `log` (or nowhere)."""
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "swarm_engine", "start", "--foreground", *args],
            env=env_for(home, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        if not isinstance(out, int):
            out.close()


def stop_engine(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Drain (SIGTERM), abort (second SIGTERM), then SIGKILL the whole process group."""
    for _ in range(2):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace / 2)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def running_engine(home: Path, *args: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_engine(home, *args, log=home / "engine-bench.log", **env)
    try:
        yield proc
    finally:
        stop_engine(proc)


def engine_log(home: Path) -> str:
    path = home / "engine-bench.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


# -- the store, as an outside client sees it -------------------------------------------------
def connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def query(db: Path, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = connect(db)
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def insert_tickets(db: Path, agent: str, inputs: Sequence[dict[str, Any]]) -> None:
    conn = connect(db)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO tickets (title, status, agent_id, inputs) VALUES (?, 'open', ?, ?)",
            [(f"bench-{i}", agent, json.dumps(v)) for i, v in enumerate(inputs)],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def wait_until(
    predicate: Callable[[], T], timeout: float, what: str, proc: subprocess.Popen[bytes] | None
) -> T:
    """Poll `predicate` until truthy; fail early if the engine died."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the engine exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.002)


def wait_registered(db: Path, proc: subprocess.Popen[bytes]) -> None:
    wait_until(
        lambda: query(db, "SELECT 1 FROM engines WHERE pid = ? AND state = 'running'", proc.pid),
        30,
        "the engine to register",
        proc,
    )


def parse_ts(value: str) -> float:
    """A stored timestamp (UTC ISO-8601, ms, 'Z') as Unix seconds."""
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


# -- reporting -------------------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
        "mean": sum(values) / len(values) if values else math.nan,
    }


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def host_cpu() -> tuple[float, float]:
    """The whole host's CPU time so far, from the first line of `/proc/stat`: `(busy, idle)`
    in seconds summed over every core (busy: user, nice, system, irq, softirq, steal;
    idle: idle and iowait). Kernel work done for no process (namespace teardown in
    kworkers, RCU) counts here and in no process's own CPU time."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / hz, (idle + iowait) / hz


def machine() -> dict[str, str]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def print_machine() -> None:
    info = machine()
    print(" | ".join(f"{k}: {v}" for k, v in info.items()))


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
