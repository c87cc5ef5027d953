"""Many clients cancel, reopen and bulk-retry the same tickets while three engines run
them: once the clients stop, every ticket settles, no run stays `running`, and no ticket
ever ran twice at once. A tester's hammer (20 API threads, 3 engines on one PostgreSQL
database) left 1 to 4 tickets of 10 `open` for ever: a run whose step start was refused
(its attempt had lost the ticket) was being abandoned when the lease keeper's cancel of
the same run came, and that cancel cut the abandon short; the run stayed `running` on a
live engine and the claim guard kept the ticket from every later claim."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import pytest
from tests.acceptance.conftest import write_agent
from tests.acceptance.test_cancel_reopen import instant
from tests.acceptance.test_engine_dialects import FAST, Fleet, fleet, register
from tests.support.cli import query, swarm, swarm_inproc, wait_until
from tests.support.pipes import read_lines

from swarm_engine.config import load_settings
from swarm_engine.engine import leases
from swarm_engine.engine.session import EngineSession
from swarm_engine.errors import StoreBusyError, SwarmError
from swarm_engine.store import Ticket, open_store

__all__ = ["fleet"]

TICKETS = 10
CLIENTS = 16
HAMMER_SECONDS = 15.0
SETTLE_SECONDS = 30.0


def hammer(fleet: Fleet, stop: threading.Event, seed: int, done: list[int]) -> None:
    """One client: cancels, reopens and bulk-retries random tickets until `stop`."""
    rng = random.Random(seed)
    store = open_store(fleet.target.target, busy_timeout=1.0)
    calls = 0
    try:
        while not stop.is_set():
            tid = rng.randint(1, TICKETS)
            try:
                match rng.randrange(3):
                    case 0:
                        store.tickets.cancel(tid)
                    case 1:
                        store.tickets.reopen(tid)
                    case _:
                        store.tickets.reopen_many(rng.sample(range(1, TICKETS + 1), 4))
            except SwarmError:  # already so (a conflict), or a busy store: the next one
                pass
            calls += 1
    finally:
        store.close()
        done.append(calls)


def test_a_storm_of_cancels_and_reopens_leaves_no_ticket_stuck(
    fleet: Fleet, tmp_path: Path
) -> None:
    register(fleet, tmp_path / "slow", "name: slow\nkind: shell\ncommand: sleep 1\n")
    for i in range(TICKETS):
        assert fleet.cli("ticket", "create", "--title", f"t{i}", "--agent", "slow").returncode == 0
    logs: list[str] = []
    for _ in range(3):
        engine = fleet.start("--max-vms", "4", "--another", **FAST)
        read_lines(engine, lambda line: logs.append(line.rstrip("\n")))
    wait_until(
        lambda: len(fleet.rows("SELECT 1 FROM step_executions WHERE status = 'running'")) >= 4,
        60,
        "the engines to run tickets",
    )

    stop = threading.Event()
    calls: list[int] = []
    clients = [
        threading.Thread(target=hammer, args=(fleet, stop, seed, calls), daemon=True)
        for seed in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    deadline = time.monotonic() + HAMMER_SECONDS
    while time.monotonic() < deadline and all(c.is_alive() for c in clients):
        stop.wait(0.5)
    stop.set()
    for client in clients:
        client.join(30)
    assert len(calls) == CLIENTS and sum(calls) > 0, calls

    def settled() -> bool:
        live = fleet.rows(
            "SELECT 1 FROM tickets WHERE status NOT IN ('done','failed','cancelled')"
            " UNION ALL SELECT 1 FROM workflow_runs WHERE status = 'running'"
        )
        return not live

    try:
        wait_until(settled, SETTLE_SECONDS, "every ticket to settle")
    except AssertionError:
        stuck = fleet.rows(
            "SELECT t.id, t.status, r.id AS run_id, r.engine_id, r.attempt_id,"
            " t.attempt_id AS ticket_attempt, s.status AS step"
            " FROM tickets t LEFT JOIN workflow_runs r ON r.ticket_id = t.id"
            " AND r.status = 'running' LEFT JOIN step_executions s ON s.run_id = r.id"
            " WHERE t.status NOT IN ('done','failed','cancelled') OR r.id IS NOT NULL"
        )
        raise AssertionError(
            f"tickets or runs stuck after the storm: {stuck}\n" + "\n".join(logs[-40:])
        ) from None

    # never two runs of one ticket at once, and every run's steps closed with it
    runs = fleet.rows("SELECT * FROM workflow_runs ORDER BY id")
    by_ticket = defaultdict(list)
    for run in runs:
        by_ticket[run["ticket_id"]].append(run)
    for ticket_runs in by_ticket.values():
        for earlier, later in itertools.pairwise(ticket_runs):
            assert instant(earlier["completed_at"]) <= instant(later["started_at"]), (
                earlier,
                later,
            )
    assert fleet.rows("SELECT * FROM step_executions WHERE status IN ('queued','running')") == []
    # each step execution belongs to one run, and no run has more than its one step
    counts = fleet.rows("SELECT run_id, count(*) AS n FROM step_executions GROUP BY run_id")
    assert all(int(c["n"]) == 1 for c in counts), counts
    # a done ticket's result is its last run's
    for ticket in fleet.rows("SELECT id, status FROM tickets WHERE status = 'done'"):
        assert by_ticket[ticket["id"]][-1]["status"] == "done", by_ticket[ticket["id"]]
    # every engine lives on, and none crashed or took a lost ticket for its own abort
    assert all(proc.poll() is None for proc in fleet.procs)
    bad = [line for line in logs if "Traceback" in line or line.endswith(" aborted")]
    assert bad == [], bad


def test_the_keepers_cancel_does_not_cut_short_the_close_of_a_lost_run(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The storm's race, one step at a time: a claimed ticket is cancelled and reopened
    before its step starts; the step's start is refused, and the runner abandons its run.
    That close meets a busy store, and while it waits the lease keeper sees the attempt's
    loss and cancels the run's task. The close is still written (the run `failed`, its
    step, which never started, `skipped`) and the task ends as a lost ticket's does, not as an engine's abort."""
    db = home / "tickets.db"
    write_agent(tmp_path / "slow", "name: slow\nkind: shell\ncommand: sleep 30\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "slow")).returncode == 0
    swarm(home, "ticket", "create", "--title", "s", "--agent", "slow", check=True)
    monkeypatch.setattr(leases, "WATCH_INTERVAL", 3600.0)  # the keeper looks when told

    async def claim_lose_and_run() -> tuple[BaseException | Ticket | None, list[str]]:
        settings = load_settings(home=str(home))
        async with EngineSession(settings, kind="daemon", max_vms=1) as session:
            loop = asyncio.get_running_loop()
            keeper, runs, tickets = session.keeper, session.store.runs, session.store.tickets
            looked, calls = threading.Event(), []

            def look() -> None:  # (on the loop) the keeper's held-check, now
                keeper._next_check = 0.0
                keeper._wake.set()

            def abandon_run(run_id: int, error: str, **rows: object) -> None:  # (store thread)
                calls.append("abandon")
                # busy for as long as the keeper still holds the lost attempt and has not
                # looked yet: it is told to look now, and its cancel comes meanwhile
                if str(ticket.attempt_id) in keeper.holdings and not looked.is_set():
                    if calls.count("abandon") == 1:
                        loop.call_soon_threadsafe(look)
                    raise StoreBusyError("database is locked (held by another writer)")
                real_abandon(run_id, error, **rows)

            def held(attempt_ids: Iterable[str]) -> set[str]:
                found = real_held(attempt_ids)
                if "abandon" in calls:
                    calls.append("held")
                    looked.set()
                return found

            real_abandon, real_held = runs.abandon_run, tickets.held
            monkeypatch.setattr(runs, "abandon_run", abandon_run)
            monkeypatch.setattr(tickets, "held", held)
            ((ticket, plan, started),) = await session.gate(
                session.claim_planned, attempt_id=uuid.uuid4().hex, limit=1
            )
            assert started is not None  # the run began with the claim, its step queued
            other = open_store(db)
            try:
                other.tickets.cancel(ticket.id)
                other.tickets.reopen(ticket.id)
            finally:
                other.close()
            try:
                outcome: BaseException | Ticket | None = await asyncio.wait_for(
                    session.run_claimed(ticket, None, plan, started), 60
                )
            except (asyncio.CancelledError, SwarmError) as exc:
                outcome = exc
            return outcome, calls

    outcome, calls = asyncio.run(claim_lose_and_run())
    assert calls[0] == "abandon", calls
    (run,) = query(db, "SELECT * FROM workflow_runs")
    (step,) = query(db, "SELECT * FROM step_executions")
    assert run["status"] == "failed", (run, step)
    assert run["error"].startswith("stopped: this attempt lost the ticket"), run
    # its step never started (its start refused): skipped, saying why
    assert step["status"] == "skipped" and step["error"] == f"not run: {run['error']}", step
    assert isinstance(outcome, Ticket) and outcome.status == "open", outcome
