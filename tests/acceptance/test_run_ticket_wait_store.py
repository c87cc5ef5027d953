"""`run-ticket ID --wait` while its store does not answer: a SQLite store another client
holds locked past `busy_timeout` is a delay (a note on stderr, then the ticket ends
done); a PostgreSQL server stopped mid-run ends it with one `error:` line and exit 6
once the store has been silent for a `lease_ttl` (it retried forever before, printing
two lines every 12 s)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.support.cli import env_for, query, swarm_inproc, wait_until, write_lock
from tests.support.postgres import pg_query, start_server


def run_ticket(home: Path, **env: str) -> tuple[subprocess.Popen[str], list[str]]:
    """`run-ticket 1 --wait`, its stderr lines gathered as they come (`ended` waits)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", "run-ticket", "1", "--wait"],
        env=env_for(home, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        lines.extend(iter(proc.stderr.readline, ""))

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    PUMPS[proc.pid] = thread
    return proc, lines


PUMPS: dict[int, threading.Thread] = {}


def ended(proc: subprocess.Popen[str]) -> str:
    """Its stdout, once it has exited (within 120 s) and its stderr is all read."""
    assert proc.stdout is not None
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read() if proc.stdout else ""))
    reader.start()
    proc.wait(timeout=120)
    reader.join(timeout=60)
    PUMPS.pop(proc.pid).join(timeout=60)
    proc.stdout.close()
    if proc.stderr is not None:
        proc.stderr.close()
    return out[0]


def slow_ticket(home: Path, tmp_path: Path, **env: str) -> None:
    write_agent(tmp_path / "slow", "name: slow\nkind: shell\ncommand: sleep 2\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "slow"), **env).returncode == 0
    done = swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "slow", **env)
    assert done.returncode == 0


def test_a_sqlite_store_locked_past_busy_timeout_is_a_delay(home: Path, tmp_path: Path) -> None:
    slow_ticket(home, tmp_path)
    db = home / "tickets.db"
    proc, lines = run_ticket(home, SWARM_BUSY_TIMEOUT="0.2", SWARM_HEARTBEAT_INTERVAL="0.3")
    try:
        wait_until(lambda: query(db, "SELECT 1 FROM step_executions WHERE status = 'running'"),
                   60, "the step to run")  # fmt: skip
        with write_lock(db):  # held until the command said it waits (past busy_timeout)
            wait_until(lambda: any("store busy" in x for x in lines), 60, "a busy note")
            assert proc.poll() is None
        out = ended(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, (out, lines)
    assert "ticket 1 done" in out, out
    assert all("store busy" in x for x in lines), lines  # notes only, one line each
    assert query(db, "SELECT status FROM tickets")[0]["status"] == "done"


def test_a_postgresql_server_stopped_mid_run_ends_it_with_one_line(tmp_path: Path) -> None:
    server = start_server()
    if isinstance(server, str):
        pytest.skip(f"no PostgreSQL server: {server}")
    try:
        url = server.create_database()
        home = tmp_path / "home"
        assert swarm_inproc(home, "status", "--init", SWARM_DATABASE_URL=url).returncode == 0
        slow_ticket(home, tmp_path, SWARM_DATABASE_URL=url)
        proc, lines = run_ticket(
            home, SWARM_DATABASE_URL=url, SWARM_LEASE_TTL="3", SWARM_HEARTBEAT_INTERVAL="0.5"
        )
        try:
            wait_until(
                lambda: pg_query(url, "SELECT 1 FROM step_executions WHERE status = 'running'"),
                60, "the step to run",
            )  # fmt: skip
            server.stop()
            out = ended(proc)  # bounded: it used to retry forever
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    finally:
        server.stop()
    assert proc.returncode == 6, (out, lines)
    assert not any("Traceback" in x or "never retrieved" in x for x in lines), lines
    last = lines[-1].strip()
    assert last.startswith("error: run-ticket stopped: the store has not answered for "), lines
    assert "past the ticket's lease (lease_ttl 3s)" in last and "cleanup" in last, last
