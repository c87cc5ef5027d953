"""Running the real `swarm-engine` command as a subprocess, and reading its databases."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def env_for(home: Path, **extra: str) -> dict[str, str]:
    keep = ("SWARM_QEMU_IMAGES", "SWARM_QEMU_IMAGE", "SWARM_IMAGE_CACHE")  # which microVM image
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SWARM_", "ANTHROPIC_")) or k in keep
    }
    env["SWARM_HOME"] = str(home)
    env.update(extra)
    return env


def swarm(
    home: Path, *args: str, check: bool = False, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run `python -m swarm_engine ARGS` with SWARM_HOME=home; returns the finished process."""
    done = subprocess.run(
        [sys.executable, "-m", "swarm_engine", *args],
        env=env_for(home, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"swarm-engine {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


def start_engine(home: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """`start --foreground ARGS` in the background; the caller stops it."""
    return subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", "start", "--foreground", *args],
        env=env_for(home, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


SHELL_TIMEOUT_MS = 10_000


def end_engine(proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """End a test's engine as a user would: SIGTERM (drain), SIGTERM again (abort), so
    it closes its VMs and spare workspaces; SIGKILL of its process group only past
    `timeout` (a killed engine leaves them for `cleanup`)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)  # sleep-ok: the second signal must come after the first's drain
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def sqlite_shell(db: Path, sql: str, *, busy_timeout_ms: int | None = SHELL_TIMEOUT_MS) -> str:
    """Write with the real sqlite3 command-line shell, as any outside writer would, with
    `.timeout` set as docs/schema.md tells shell users (a shell has no busy timeout of its
    own, so without it any write that meets an engine's write fails at once)."""
    argv = ["sqlite3"]
    if busy_timeout_ms is not None:
        argv += ["-cmd", f".timeout {busy_timeout_ms}"]
    done = subprocess.run([*argv, str(db), sql], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def query(db: Path, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def snapshot(db: Path) -> list[str]:
    """Every row and schema statement, to prove a failed command changed nothing."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def wait_until(predicate: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy (a condition wait, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)  # sleep-ok: polling interval of a condition wait


def loads(text: str) -> Any:
    return json.loads(text)


def swarm_inproc(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The same command run in this process (fast; for the many bad-input cases).

    It goes through the real entry point, `swarm_engine.cli.main.main`, with the
    environment of `swarm()`, and reports like `subprocess.run`.
    """
    import contextlib
    import io

    from swarm_engine.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env_for(home, **env))
    os.environ["COLUMNS"] = "200"
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def insert_agent_row(home: Path, spec: Any) -> None:
    """Store agent `spec` (an `AgentSpec`) in the home's registry as any SQLite client
    may, past the registry's own checks."""
    conn = sqlite3.connect(home / "registry.db", timeout=30)
    try:
        with conn:
            conn.execute(
                "INSERT INTO agents (name, version, kind, description, spec) VALUES (?, ?, ?, ?, ?)",
                (spec.name, spec.version, spec.kind, spec.description, spec.model_dump_json()),
            )
    finally:
        conn.close()


def insert_open_tickets(db: Path, rows: list[tuple[str, str, str]]) -> None:
    """Insert `(title, agent_id, inputs JSON)` rows as open tickets, as any SQLite client
    may, in one transaction."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO tickets (title, status, agent_id, inputs) VALUES (?, 'open', ?, ?)",
                rows,
            )
    finally:
        conn.close()


@contextlib.contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """Hold the database's write lock, as a long transaction of another client would (one
    that has written: a row of `tickets` is rewritten as it was, if there is one)."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE tickets SET title = title WHERE id = (SELECT min(id) FROM tickets)")
    try:
        yield
    finally:
        conn.execute("COMMIT")
        conn.close()
