"""PostgreSQL faults a tester found: a server restart is a delay, never a failed ticket;
a cancel then reopen by SQL mid-run leaves no run open; connection errors are one line,
at once, and never show the password."""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.cli import start_engine, swarm_inproc, wait_until
from tests.support.postgres import Server, pg_query, psql, start_server

from swarm_engine.store import redact

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.5", "SWARM_POLL_INTERVAL": "0.5"}


@pytest.fixture
def own_server() -> Iterator[Server]:
    """A server of this test's own: it gets restarted."""
    server = start_server()
    if isinstance(server, str):
        pytest.skip(f"no PostgreSQL server: {server}")
    yield server
    server.stop()


def restart(server: Server) -> None:
    assert server.folder is not None and server.bindir is not None
    # -l: the restarted server must not hold our pipes open (it would inherit them)
    argv = [str(server.bindir / "pg_ctl"), "-D", str(server.folder / "data"), "-m", "fast",
            "-l", str(server.folder / "log"), "-w", "restart"]  # fmt: skip
    if server.owner is not None:
        argv = ["runuser", "-u", server.owner, "--", *argv]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=120)  # fmt: skip


def home_for(tmp_path: Path, url: str) -> Path:
    home = tmp_path / "home"
    done = swarm_inproc(home, "status", "--init", SWARM_DATABASE_URL=url)
    assert done.returncode == 0, done.stderr
    return home


def test_a_server_restart_mid_run_fails_no_ticket(own_server: Server, tmp_path: Path) -> None:
    url = own_server.create_database()
    home = home_for(tmp_path, url)
    folder = tmp_path / "nap"
    folder.mkdir()
    (folder / "agent.yaml").write_text("name: nap\nkind: shell\ncommand: sleep 1; echo rested\n")
    assert (
        swarm_inproc(home, "agent", "register", str(folder), SWARM_DATABASE_URL=url).returncode == 0
    )
    engine = start_engine(home, "--max-vms", "3", SWARM_DATABASE_URL=url, **FAST)
    try:
        psql(url, "INSERT INTO tickets (title, status, agent_id) SELECT 'n' || g, 'open', 'nap'"
                  " FROM generate_series(1, 6) g")  # fmt: skip
        wait_until(lambda: pg_query(url, "SELECT 1 FROM tickets WHERE status = 'running'"),
                   30, "a running ticket")  # fmt: skip
        restart(own_server)  # the pool's connections are all closed by the server
        psql(url, "INSERT INTO tickets (title, status, agent_id) SELECT 'm' || g, 'open', 'nap'"
                  " FROM generate_series(1, 6) g")  # fmt: skip
        wait_until(
            lambda: pg_query(url, "SELECT count(*) AS n FROM tickets WHERE status IN"
                                  " ('done','failed')")[0]["n"] == 12,
            120, "every ticket to end",
        )  # fmt: skip
        assert engine.poll() is None, "the engine must ride out the restart"
    finally:
        engine.terminate()
        engine.communicate(timeout=60)
    rows = pg_query(url, "SELECT status, error FROM tickets")
    assert {r["status"] for r in rows} == {"done"}, [r["error"] for r in rows]


def test_a_cancel_then_reopen_by_sql_leaves_no_run_open(pg_url: str, tmp_path: Path) -> None:
    home = home_for(tmp_path, pg_url)
    folder = tmp_path / "slow"
    folder.mkdir()
    (folder / "agent.yaml").write_text("name: slow\nkind: shell\ncommand: sleep 2; echo ok\n")
    assert swarm_inproc(home, "agent", "register", str(folder),
                        SWARM_DATABASE_URL=pg_url).returncode == 0  # fmt: skip
    engine = start_engine(home, "--max-vms", "2", SWARM_DATABASE_URL=pg_url, **FAST)
    try:
        for round_ in range(3):
            tid = int(psql(pg_url, "INSERT INTO tickets (title, status, agent_id)"
                                   f" VALUES ('r{round_}', 'open', 'slow') RETURNING id"))  # fmt: skip
            wait_until(lambda tid=tid: pg_query(
                pg_url, f"SELECT 1 FROM step_executions s JOIN workflow_runs r ON r.id = s.run_id"
                f" WHERE r.ticket_id = {tid} AND s.status = 'running'"), 30, "the step to run")  # fmt: skip
            psql(pg_url, f"UPDATE tickets SET status = 'cancelled' WHERE id = {tid}")
            gap = 0.1 + 0.05 * round_  # the gap between the two writers' updates is the input
            time.sleep(gap)  # sleep-ok: an input of the test, not a wait
            psql(pg_url, f"UPDATE tickets SET status = 'open' WHERE id = {tid}")
            wait_until(lambda tid=tid: pg_query(pg_url, f"SELECT 1 FROM tickets WHERE id = {tid}"
                                                " AND status = 'done'"), 60, "the ticket to run again")  # fmt: skip
    finally:
        engine.terminate()
        out, _ = engine.communicate(timeout=60)
    assert "Traceback" not in out
    assert pg_query(pg_url, "SELECT id FROM workflow_runs WHERE status = 'running'") == []
    runs = pg_query(pg_url, "SELECT ticket_id, started_at, completed_at FROM workflow_runs"
                            " ORDER BY ticket_id, id")  # fmt: skip
    for earlier, later in itertools.pairwise(runs):
        if earlier["ticket_id"] == later["ticket_id"]:
            assert earlier["completed_at"] <= later["started_at"], "two runs at once"


@pytest.mark.parametrize(
    ("url", "hidden"),
    [
        ("postgresql://weird:p%zzsecretpart@127.0.0.1:1/db", "secretpart"),
        ("postgresql://weird:topsecret@127.0.0.1:1/db", "topsecret"),
        ("postgresql://weird:s/e#c?r@et@127.0.0.1:1/db", "s/e#c?r@et"),
        ("postgresql://weird@127.0.0.1:1/db?password=hunter22&sslmode=disable", "hunter22"),
    ],
)
def test_a_connection_error_is_one_line_at_once_without_the_password(
    tmp_path: Path, url: str, hidden: str
) -> None:
    started = time.monotonic()
    done = swarm_inproc(tmp_path / "h", "status", "--init", SWARM_DATABASE_URL=url)
    assert done.returncode == 6
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: cannot connect to postgresql://weird")
    assert hidden not in done.stderr + done.stdout and hidden not in redact(url)
    assert time.monotonic() - started < 8  # not the pool's retries (a bound, not a benchmark)


def test_an_abort_under_a_held_lock_ends_within_the_lease_not_a_lock_wait_per_call(
    pg_url: str, tmp_path: Path
) -> None:
    """The second stop while another client holds a write lock: each queued store call
    used to wait its whole `lock_timeout` in turn (4 aborts, renewals, the engine's end:
    (4 + 2) x 4 s here); from the abort on, a call waits only until one lease after it."""
    import psycopg

    home = home_for(tmp_path, pg_url)
    folder = tmp_path / "long"
    folder.mkdir()
    (folder / "agent.yaml").write_text("name: long\nkind: shell\ncommand: sleep 300\n")
    env = {"SWARM_DATABASE_URL": pg_url}
    assert swarm_inproc(home, "agent", "register", str(folder), **env).returncode == 0
    psql(pg_url, "INSERT INTO tickets (title, status, agent_id) SELECT 'l' || g, 'open', 'long'"
                 " FROM generate_series(1, 4) g")  # fmt: skip
    limits = {"SWARM_BUSY_TIMEOUT": "4", "SWARM_LEASE_TTL": "4"}
    engine = start_engine(home, "--max-vms", "4", **env, **FAST, **limits)
    running = "SELECT count(*) AS n FROM step_executions WHERE status = 'running'"
    wait_until(lambda: pg_query(pg_url, running)[0]["n"] == 4, 60, "four steps to run")
    engine.send_signal(signal.SIGTERM)
    draining = "SELECT 1 FROM engines WHERE pid = %(pid)s AND state = 'draining'"
    wait_until(lambda: pg_query(pg_url, draining, {"pid": engine.pid}), 20, "the engine to drain")
    locker = psycopg.connect(pg_url)
    try:  # reads go on; every write waits for this transaction
        locker.execute("LOCK TABLE tickets, workflow_runs, step_executions, vms, engines"
                       " IN EXCLUSIVE MODE")  # fmt: skip
        engine.send_signal(signal.SIGTERM)  # abort
        out, _ = engine.communicate(timeout=4 + 3 * 4)  # one lease, one wait in flight
        statuses = pg_query(pg_url, "SELECT status FROM tickets")
        assert {r["status"] for r in statuses} == {"running"}, statuses  # nothing written
    finally:
        locker.rollback()
        locker.close()
        if engine.poll() is None:
            engine.kill()
            engine.communicate()
    assert engine.returncode == 6, out  # records lost: not a clean stop
    said = [line for line in out.splitlines() if "left leased to it" in line]
    assert len(said) == 1 and all(str(t) in said[0] for t in (1, 2, 3, 4)), out


def test_a_server_error_is_its_first_line_only(pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL follows its message with `LINE 1: <query text>` and a caret (a lock
    timeout) or `CONTEXT: PL/pgSQL function ...` (a trigger's RAISE): both reached the
    CLI's one-line error and a ticket's `error`. Only the message is kept."""
    import psycopg

    home = home_for(tmp_path, pg_url)
    psql(pg_url, "CREATE FUNCTION no_title() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                 " IF NEW.title = 'refused' THEN RAISE EXCEPTION 'titles like this are refused';"
                 " END IF; RETURN NEW; END $$;"
                 "CREATE TRIGGER no_title BEFORE INSERT ON tickets FOR EACH ROW"
                 " EXECUTE FUNCTION no_title()")  # fmt: skip
    done = swarm_inproc(home, "ticket", "create", "--title", "refused", "--agent", "echo",
                        SWARM_DATABASE_URL=pg_url)  # fmt: skip
    assert done.returncode != 0 and "titles like this are refused" in done.stderr, done.stderr
    assert "CONTEXT" not in done.stderr and "PL/pgSQL" not in done.stderr, done.stderr
    with psycopg.connect(pg_url, autocommit=False) as holder:
        holder.execute("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")
        done = swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "echo",
                            SWARM_DATABASE_URL=pg_url, SWARM_BUSY_TIMEOUT="0.3")  # fmt: skip
        holder.rollback()
    assert done.returncode == 6 and "lock timeout" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "LINE" not in done.stderr and "^" not in done.stderr, done.stderr
    assert "INSERT" not in done.stderr, done.stderr
