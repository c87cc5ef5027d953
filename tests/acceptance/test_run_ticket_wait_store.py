"""`run-ticket ID --wait` while its store does not answer: a SQLite store another client
holds locked past `busy_timeout` is a delay (a note on stderr, then the ticket ends
done); a PostgreSQL server stopped mid-run ends it with one `error:` line and exit 6
once the store has been silent for a `lease_ttl` (it retried forever before, printing
two lines every 12 s). So does a server paused (SIGSTOP: its connections stay open and
nothing answers; it waited out the whole pause, then said it lost the ticket, exit 1)
and a SQLite lock held past `lease_ttl` (it ended some three leases after the lock, its
last lines saying the run was lost, then stopped): once, about one lease after the store
went silent, with one line, the ticket left to the expired-lease reclaim."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.support.cli import env_for, query, swarm_inproc, wait_until, write_lock
from tests.support.postgres import Server, _free_port, pg_query, start_server


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


LEASE = 4.0
SILENT = {"SWARM_LEASE_TTL": f"{LEASE:g}", "SWARM_HEARTBEAT_INTERVAL": "0.5"}
SILENCE = 2.5 * LEASE
"""How long the tests below keep the store silent at most: the command must end within
it (it ends about one lease after the store went silent; it took three, or for ever)."""


def gave_up_once(proc: subprocess.Popen[str], lines: list[str], out: str) -> None:
    """`run-ticket` ended with exit 6 and one last line, its only `error:` line, saying
    the store was silent for at least a lease; no line says the run ended otherwise (lost
    to another engine, failed, or its close left)."""
    assert proc.returncode == 6, (out, lines)
    errors = [x for x in lines if x.startswith("error:")]
    assert errors == [lines[-1]], lines
    found = re.match(
        r"error: run-ticket stopped: the store has not answered for (\d+)s, ", errors[0]
    )
    assert found is not None and int(found.group(1)) >= LEASE, errors
    assert f"past the ticket's lease (lease_ttl {LEASE:g}s): " in errors[0], errors
    assert errors[0].endswith(
        "; ticket 1's run could not be recorded: once the store answers, its expired lease"
        " is reclaimed (by an engine or 'swarm-engine cleanup')\n"
    ), errors
    for said in ("lost the ticket", "could not be closed", "failed", "Traceback"):
        assert not any(said in x for x in lines), (said, lines)
    assert "ticket 1 " not in out, out  # (no summary: the run did not end here)


def server_pids(server: Server) -> list[int]:
    """The server's postmaster and its children (backends, background workers)."""
    assert server.folder is not None
    postmaster = int((server.folder / "data" / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                pids.append(int(entry))
    return pids


@contextlib.contextmanager
def paused(server: Server) -> Iterator[None]:
    """The server paused (SIGSTOP): its sockets stay open, nothing answers."""
    pids = server_pids(server)
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@pytest.fixture
def own_server() -> Iterator[Server]:
    """A throwaway PostgreSQL cluster of this test's own (it is paused: never the one
    other tests share)."""
    server = start_server(port=_free_port())
    if isinstance(server, str):
        pytest.skip(f"no PostgreSQL server of our own: {server}")
    try:
        yield server
    finally:
        server.stop()


def test_a_postgresql_server_paused_past_the_lease_ends_it_once(
    own_server: Server, tmp_path: Path
) -> None:
    url = own_server.create_database()
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", SWARM_DATABASE_URL=url).returncode == 0
    slow_ticket(home, tmp_path, SWARM_DATABASE_URL=url)
    proc, lines = run_ticket(home, SWARM_DATABASE_URL=url, **SILENT)
    try:
        wait_until(
            lambda: pg_query(url, "SELECT 1 FROM step_executions WHERE status = 'running'"),
            60, "the step to run",
        )  # fmt: skip
        with paused(own_server):  # until it has exited: it did not, for the whole pause
            wait_until(lambda: proc.poll() is not None, SILENCE, "run-ticket to end")
        out = ended(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    gave_up_once(proc, lines, out)
    # never run twice: the ticket is where the command left it, its lease for the reclaim
    (ticket,) = pg_query(url, "SELECT status, attempts FROM tickets")
    assert ticket == {"status": "running", "attempts": 1}, ticket

    def requeued() -> bool:
        done = swarm_inproc(home, "cleanup", SWARM_DATABASE_URL=url, **SILENT)
        assert done.returncode == 0, done.stderr
        return pg_query(url, "SELECT status FROM tickets")[0]["status"] == "open"

    wait_until(requeued, 60, "cleanup to re-queue the ticket once its lease expired")
    (run,) = pg_query(url, "SELECT status, error FROM workflow_runs")
    assert run["status"] == "failed" and "lease expired" in run["error"], run


def test_a_sqlite_store_locked_past_the_lease_ends_it_once(home: Path, tmp_path: Path) -> None:
    slow_ticket(home, tmp_path)
    db = home / "tickets.db"
    proc, lines = run_ticket(home, SWARM_BUSY_TIMEOUT="0.2", **SILENT)
    try:
        wait_until(lambda: query(db, "SELECT 1 FROM step_executions WHERE status = 'running'"),
                   60, "the step to run")  # fmt: skip
        with write_lock(db):  # held until it has exited: it took three leases
            wait_until(lambda: proc.poll() is not None, SILENCE, "run-ticket to end")
        out = ended(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    gave_up_once(proc, lines, out)
    assert "database is locked" in lines[-1], lines
    assert query(db, "SELECT status, attempts FROM tickets") == [
        {"status": "running", "attempts": 1}
    ]
    runs = query(db, "SELECT status FROM workflow_runs")  # (closed by the reclaim)
    assert runs == [{"status": "running"}], runs


def test_a_store_silent_before_the_claim_leaves_the_ticket_as_it_was(
    home: Path, tmp_path: Path
) -> None:
    slow_ticket(home, tmp_path)
    db = home / "tickets.db"
    with write_lock(db):  # from before its start: its engine row cannot be written
        proc, lines = run_ticket(home, SWARM_BUSY_TIMEOUT="0.2", **SILENT)
        try:
            wait_until(lambda: proc.poll() is not None, SILENCE, "run-ticket to end")
            out = ended(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 6, (out, lines)
    errors = [x for x in lines if x.startswith("error:")]
    assert errors == [lines[-1]], lines
    assert errors[0].startswith("error: run-ticket stopped: the store has not answered for ")
    assert f", a whole lease (lease_ttl {LEASE:g}s): " in errors[0], errors
    assert "database is locked" in errors[0], errors
    assert errors[0].endswith("; ticket 1 was not claimed: it is left as it was, not run\n")
    assert query(db, "SELECT status, attempts FROM tickets") == [{"status": "open", "attempts": 0}]
    assert query(db, "SELECT id FROM workflow_runs") == []
