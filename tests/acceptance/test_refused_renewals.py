"""A store that refuses a lease renewal or the engine's heartbeat (a trigger's `RAISE`), on
each store. The renewal is one statement for all held tickets: refused, each lease is
renewed apart, and only a ticket whose renewal the store refuses fails, with one line
saying what the store said; the others run on and the engine goes on. A heartbeat the
store refuses stops the engine (fail closed), with one line and its runs aborted, as
`stop --now` does. Before, either one killed the engine with an ExceptionGroup traceback,
and each restart used up the innocent tickets' attempts."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.acceptance.conftest import stop, write_agent
from tests.conftest import Target
from tests.support.cli import start_engine, swarm_inproc, wait_until

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.5", "SWARM_POLL_INTERVAL": "0.5", "SWARM_LEASE_TTL": "6"}

RENEWAL = {
    "sqlite": (
        "CREATE TRIGGER no_renew BEFORE UPDATE OF lease_expires_at ON tickets"
        " WHEN OLD.title = 'bad' AND OLD.lease_expires_at IS NOT NULL"
        " AND NEW.lease_expires_at IS NOT NULL"
        " BEGIN SELECT RAISE(ABORT, 'no renew'); END;"
    ),
    "postgresql": (
        "CREATE FUNCTION no_renew() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF OLD.title = 'bad' AND OLD.lease_expires_at IS NOT NULL"
        " AND NEW.lease_expires_at IS NOT NULL THEN RAISE EXCEPTION 'no renew'; END IF;"
        " RETURN NEW; END $$;"
        " CREATE TRIGGER no_renew BEFORE UPDATE OF lease_expires_at ON tickets"
        " FOR EACH ROW EXECUTE FUNCTION no_renew();"
    ),
}
"""Refuses to renew the lease of the ticket titled 'bad' (a claim, which sets a lease
where there was none, and the ticket's end, which clears it, go through)."""

HEARTBEAT = {
    "sqlite": "CREATE TRIGGER h BEFORE UPDATE ON engines BEGIN SELECT RAISE(ABORT, 'x'); END;",
    "postgresql": (
        "CREATE FUNCTION h() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " RAISE EXCEPTION 'x'; END $$;"
        " CREATE TRIGGER h BEFORE UPDATE ON engines FOR EACH ROW EXECUTE FUNCTION h();"
    ),
}


class Home:
    """A home on the store under test, with a shell agent `nap` (sleeps `seconds`)."""

    def __init__(self, target: Target, path: Path) -> None:
        self.target, self.path = target, path
        assert self.cli("status", "--init").returncode == 0
        agent = write_agent(
            path.parent / "nap",
            'name: nap\nkind: shell\ncommand: sleep "$${INPUT_SECONDS}"\n',
        )
        done = self.cli("agent", "register", str(agent))
        assert done.returncode == 0, done.stderr
        self.procs: list[subprocess.Popen[str]] = []

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return swarm_inproc(self.path, *args, **self.target.env)

    def start(self) -> subprocess.Popen[str]:
        proc = start_engine(self.path, "--max-vms", "2", **self.target.env, **FAST)
        self.procs.append(proc)
        return proc

    def tickets(self) -> dict[str, dict[str, Any]]:
        return {r["title"]: r for r in self.target.rows("SELECT * FROM tickets ORDER BY id")}

    def add(self, title: str, seconds: int) -> None:
        self.target.sql(
            "INSERT INTO tickets (title, status, agent_id, inputs)"
            f" VALUES ('{title}', 'open', 'nap', '{{\"seconds\": {seconds}}}')"
        )


@pytest.fixture
def home(store_target: Target, tmp_path: Path) -> Iterator[Home]:
    h = Home(store_target, tmp_path / "home")
    yield h
    for proc in h.procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_a_refused_lease_renewal_fails_that_ticket_alone(home: Home) -> None:
    home.add("bad", 3)
    home.add("innocent", 3)
    home.target.sql(RENEWAL[home.target.dialect])
    proc = home.start()

    def both_ended() -> bool:
        statuses = {t["status"] for t in home.tickets().values()}
        return proc.poll() is not None or statuses <= {"done", "failed"}

    wait_until(both_ended, 90, "both tickets to end")
    assert proc.poll() is None, "the engine died: " + (proc.stdout.read() if proc.stdout else "")
    rows = home.tickets()
    assert rows["innocent"]["status"] == "done" and rows["innocent"]["attempts"] == 1, rows
    bad = rows["bad"]
    assert bad["status"] == "failed" and bad["attempts"] == 1, bad
    line = "the renewal of its lease could not be recorded: the store refused it (no renew"
    assert bad["error"].startswith(line) and "\n" not in bad["error"], bad
    assert not home.target.rows("SELECT 1 FROM workflow_runs WHERE status = 'running'")
    # the engine goes on: it claims and runs a ticket created now
    home.add("later", 0)
    wait_until(lambda: home.tickets()["later"]["status"] == "done", 60, "a later ticket")
    assert proc.poll() is None
    out = stop(proc)
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "lease keeper" not in out, out
    said = [x for x in out.splitlines() if "WARNING" in x and f"ticket {bad['id']} " in x]
    assert len(said) == 1 and f"ticket {bad['id']} failed: {line}" in said[0], out


def test_a_refused_heartbeat_stops_the_engine_in_one_line(home: Home) -> None:
    home.add("long", 300)
    proc = home.start()
    wait_until(
        lambda: (
            proc.poll() is not None
            or home.target.rows("SELECT 1 FROM step_executions WHERE status = 'running'")
        ),
        60,
        "the step to run",
    )
    assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
    home.target.sql(HEARTBEAT[home.target.dialect])
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "Traceback" not in out and "ExceptionGroup" not in out, out
    errors = [x for x in out.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, out
    assert errors[0].startswith(
        "error: engine stopped: its heartbeat could not be recorded: the store refused it (x"
    ), out
    # its runs aborted as by `stop --now`: the run recorded failed, the ticket re-queued
    long = home.tickets()["long"]
    assert long["status"] == "open" and long["attempts"] == 1, long
    runs = home.target.rows("SELECT status, error FROM workflow_runs")
    assert runs == [{"status": "failed", "error": "aborted: the engine was stopped during the run"}]


STEP_START = {
    "sqlite": (
        "CREATE TRIGGER no_start BEFORE UPDATE OF status ON step_executions"
        " WHEN NEW.status = 'running' AND NEW.run_id IN"
        " (SELECT r.id FROM workflow_runs r JOIN tickets t ON t.id = r.ticket_id"
        "  WHERE t.title = 'bad')"
        " BEGIN SELECT RAISE(ABORT, 'no start'); END;"
    ),
    "postgresql": (
        "CREATE FUNCTION no_start() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.status = 'running' AND NEW.run_id IN (SELECT r.id FROM workflow_runs r"
        " JOIN tickets t ON t.id = r.ticket_id WHERE t.title = 'bad')"
        " THEN RAISE EXCEPTION 'no start'; END IF; RETURN NEW; END $$;"
        " CREATE TRIGGER no_start BEFORE UPDATE OF status ON step_executions"
        " FOR EACH ROW EXECUTE FUNCTION no_start();"
    ),
}


def test_a_run_write_a_trigger_refuses_fails_that_ticket_on_each_store(home: Home) -> None:
    """On PostgreSQL a trigger's `RAISE EXCEPTION` is a refusal, as SQLite's `RAISE(ABORT)`
    is: the ticket whose step start it refuses fails with one line saying so (it had come
    through as an unknown store error), and the others run."""
    home.target.sql(STEP_START[home.target.dialect])
    home.add("bad", 0)
    home.add("innocent", 0)
    proc = home.start()
    wait_until(
        lambda: (
            proc.poll() is not None
            or {t["status"] for t in home.tickets().values()} <= {"done", "failed"}
        ),
        90,
        "both tickets to end",
    )
    out = stop(proc)
    rows = home.tickets()
    assert rows["innocent"]["status"] == "done", rows
    bad = rows["bad"]
    assert bad["status"] == "failed" and bad["attempts"] == 1, bad
    assert (
        bad["error"].startswith("a step's start could not be recorded: the store refused it (")
        and "no start" in bad["error"]
        and "\n" not in bad["error"]
    ), bad
    assert "Traceback" not in out, out
