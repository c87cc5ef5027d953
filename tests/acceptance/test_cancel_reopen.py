"""Cancel, then reopen at once, a ticket whose engine has not yet stopped its run: the
ticket is queued again, but no engine runs it until the old run is over (its engine
stopped the sandbox and closed the run). A tester saw two `sleep` sandboxes of one ticket
at once: the reopen closed the old run itself, which let the claim guard through."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tests.acceptance.test_engine_dialects import FAST, Fleet, fleet, register
from tests.support.cli import env_for, swarm, wait_until

from swarm_engine.store import open_store
from swarm_engine.vm.proctree import tagged

__all__ = ["fleet"]  # the fixture, shared with test_engine_dialects


def instant(value: Any) -> float:
    """A stored timestamp (SQLite text, or a PostgreSQL datetime) in epoch seconds."""
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def store_now(fleet: Fleet) -> float:
    """The store's clock, in epoch seconds."""
    if fleet.target.dialect == "postgresql":
        return instant(fleet.rows("SELECT now() AS t")[0]["t"])
    return instant(fleet.rows("SELECT strftime('%Y-%m-%dT%H:%M:%fZ','now') AS t")[0]["t"])


def heartbeat(fleet: Fleet, pid: int) -> float:
    """The last heartbeat of the engine with this pid, in epoch seconds."""
    rows = fleet.rows("SELECT heartbeat_at FROM engines WHERE pid = %(p)s", p=pid)
    return instant(rows[0]["heartbeat_at"])


def freeze(fleet: Fleet, pid: int) -> None:
    """SIGSTOP the engine `pid` at a moment it holds no open transaction. Frozen inside
    one (its lease renewal runs every 0.3 s here), it would hold that ticket's row lock,
    and every other writer of the row would wait for it until it resumed: the cancel
    below then failed with `lock timeout` (2 runs in 4 on a loaded host). That is how
    PostgreSQL treats any frozen client, not what these tests are about."""
    for _ in range(50):
        os.kill(pid, signal.SIGSTOP)
        if fleet.target.dialect != "postgresql":
            return
        time.sleep(0.4)  # sleep-ok: a transaction open this long is the frozen engine's
        if not fleet.rows(
            "SELECT 1 FROM pg_stat_activity WHERE state LIKE 'idle in transaction%%'"
            " AND now() - state_change > interval '300 milliseconds'"
        ):
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.05)  # sleep-ok: let it commit before the next try
    raise AssertionError(f"engine {pid} kept a transaction open through 50 freezes")


@pytest.mark.parametrize(
    ("lease", "recorded"),
    [(60.0, None), (2.0, None), (2.0, "dead"), (2.0, "dead-pid")],
    ids=[
        "fresh",
        "frozen-past-its-lease",
        "frozen-and-recorded-dead-by-another-writer",
        "frozen-and-its-row-forged-dead-with-a-dead-pid",
    ],
)
def test_a_reopened_ticket_waits_until_its_stopping_engine_closed_the_old_run(
    fleet: Fleet, tmp_path: Path, lease: float, recorded: str | None
) -> None:
    """`frozen-past-its-lease`: the stopped engine stays silent for more than two leases
    (a tester's frozen engine lost the ticket to the other one after one lease, while its
    sandbox still ran): on its own host, a silent engine whose process lives is not dead,
    and its run keeps the ticket from running again until it closes that run itself.
    `...recorded-dead...`: another writer also records the frozen engine dead before the
    reopen, which used to let the reopen close the old run at once; `...dead-pid`: and
    gives its row a dead pid and an old heartbeat, so that only its sandbox's processes
    (found by their tag) show that it lives: they used to be closed after two leases."""
    timing = {**FAST, "SWARM_LEASE_TTL": str(lease)}
    register(fleet, tmp_path / "long", "name: long\nkind: shell\ncommand: sleep 300\n")
    assert fleet.cli("ticket", "create", "--title", "l", "--agent", "long").returncode == 0
    holder = fleet.start("--max-vms", "1", **timing)
    first = wait_until(
        lambda: fleet.rows("SELECT * FROM step_executions WHERE status = 'running'"), 30, "a step"
    )[0]
    old_vm = str(first["vm_id"])
    wait_until(lambda: tagged(old_vm), 30, "the first sandbox")
    other = fleet.start("--max-vms", "1", "--another", **timing)
    wait_until(
        lambda: len(fleet.rows("SELECT 1 FROM engines WHERE state = 'running'")) == 2,
        30,
        "the second engine",
    )

    freeze(fleet, holder.pid)  # it cannot notice the cancel: its sandbox runs on
    try:
        assert fleet.cli("ticket", "cancel", "1").returncode == 0
        if recorded == "dead":
            fleet.target.sql(f"UPDATE engines SET state = 'dead' WHERE pid = {holder.pid}")
        elif recorded == "dead-pid":  # only its sandbox's tag says it lives on
            fleet.target.sql(
                "UPDATE engines SET state = 'dead', pid = 999999,"
                f" heartbeat_at = '2000-01-01T00:00:00Z' WHERE pid = {holder.pid}"
            )
        reopened = fleet.cli("ticket", "reopen", "1")
        assert reopened.returncode == 0, reopened.stderr
        (stopping,) = fleet.rows("SELECT engine_id FROM workflow_runs")
        assert reopened.stdout.strip() == (
            f"ticket 1 reopened; it runs once its previous run, on engine"
            f" {stopping['engine_id']}, has ended"
        ), reopened.stdout
        assert fleet.status(1) == "open"
        # a claim by id is refused while the old run goes on (exit 4: not runnable)
        env = {**fleet.target.env, **timing}
        probe = swarm(fleet.home, "run-ticket", "1", "--wait", timeout=60, **env)
        assert probe.returncode == 4, probe.stdout + probe.stderr
        assert f"still has a run going on engine {stopping['engine_id']};" in probe.stderr, (
            probe.stderr
        )
        # the other engine heartbeats (and so polls) on, and leaves the ticket alone
        since = store_now(fleet)
        silent = 1.5 if lease > 30 else 2 * lease + 1.5  # past two leases: "dead" by then
        wait_until(
            lambda: heartbeat(fleet, other.pid) > since + silent, 30, "the other engine to poll"
        )
        assert len(fleet.rows("SELECT 1 FROM workflow_runs")) == 1
        assert fleet.rows("SELECT status FROM workflow_runs")[0]["status"] == "running"
        assert fleet.status(1) == "open"
    finally:
        os.kill(holder.pid, signal.SIGCONT)

    # the holder stops its sandbox and closes its run; then the ticket runs again
    second = wait_until(
        lambda: fleet.rows(
            "SELECT * FROM step_executions WHERE status = 'running' AND id <> %(id)s",
            id=first["id"],
        ),
        60,
        "the ticket to run again",
    )[0]
    runs = fleet.rows("SELECT * FROM workflow_runs ORDER BY id")
    assert len(runs) == 2, runs
    assert runs[0]["status"] in ("cancelled", "failed"), runs[0]
    assert instant(runs[0]["completed_at"]) <= instant(runs[1]["started_at"]), runs
    (vm,) = fleet.rows("SELECT * FROM vms WHERE id = %(id)s", id=old_vm)
    assert vm["state"] in ("destroyed", "failed"), vm
    assert instant(vm["destroyed_at"]) <= instant(second["started_at"]), (vm, second)
    assert tagged(old_vm) == []
    assert fleet.cli("ticket", "cancel", "1").returncode == 0
    wait_until(
        lambda: not fleet.rows("SELECT 1 FROM workflow_runs WHERE status = 'running'"),
        30,
        "no run left running",
    )


def test_cancel_and_reopen_back_to_back_never_overlap_two_runs(
    fleet: Fleet, tmp_path: Path
) -> None:
    """The natural race, without a stopped engine: two engines, a ticket cancelled and
    reopened in one breath, again and again. Each new run starts only after the old run's
    sandbox is destroyed and its run closed (the tester saw 2 of 9 overlap by 50-100 ms)."""
    register(fleet, tmp_path / "long", "name: long\nkind: shell\ncommand: sleep 300\n")
    assert fleet.cli("ticket", "create", "--title", "l", "--agent", "long").returncode == 0
    for _ in range(2):
        fleet.start("--max-vms", "1", "--another", **FAST)
    store = open_store(fleet.target.target)
    try:
        for trial in range(5):
            running = wait_until(
                lambda: fleet.rows("SELECT * FROM step_executions WHERE status = 'running'"),
                30,
                f"run {trial + 1}",
            )
            assert len(running) == 1, running
            store.tickets.cancel(1)
            store.tickets.reopen(1)
            wait_until(
                lambda running=running: fleet.rows(
                    "SELECT 1 FROM step_executions WHERE status = 'running' AND id > %(id)s",
                    id=running[0]["id"],
                ),
                60,
                f"run {trial + 2}",
            )
    finally:
        store.close()
    runs = fleet.rows("SELECT * FROM workflow_runs ORDER BY id")
    vms = fleet.rows(
        "SELECT r.id AS run_id, v.destroyed_at FROM workflow_runs r"
        " JOIN step_executions s ON s.run_id = r.id JOIN vms v ON v.id = s.vm_id ORDER BY r.id"
    )
    destroyed = {v["run_id"]: v["destroyed_at"] for v in vms}
    assert len(runs) == 6, runs
    for earlier, later in itertools.pairwise(runs):
        assert earlier["status"] in ("cancelled", "failed"), earlier
        assert instant(earlier["completed_at"]) <= instant(later["started_at"]), (earlier, later)
        assert instant(destroyed[earlier["id"]]) <= instant(later["started_at"]), (earlier, later)


@pytest.mark.parametrize("held", [1, 2], ids=["it-held-one-ticket", "it-held-two"])
def test_run_ticket_alone_runs_a_ticket_whose_old_run_a_killed_engine_left(
    fleet: Fleet, tmp_path: Path, held: int
) -> None:
    """No daemon: an engine is killed (-9) mid-run, the ticket cancelled and reopened.
    `run-ticket --wait` used to exit 4 (`still has a run going`) for ever, since only a
    daemon's round closed such a run; it now closes it itself once that engine has been
    silent for two leases and its process is gone, and runs the ticket. `it-held-two`:
    the engine also held another ticket, whose lease ran out: it was not recorded dead
    while it held that ticket, and nothing but a daemon re-queued it; `run-ticket`
    re-queues expired leases first, as a daemon does."""
    timing = {**FAST, "SWARM_LEASE_TTL": "1"}
    register(fleet, tmp_path / "long", "name: long\nkind: shell\ncommand: sleep 300\n")
    for _ in range(held):
        assert fleet.cli("ticket", "create", "--title", "l", "--agent", "long").returncode == 0
    holder = fleet.start("--max-vms", str(held), **timing)
    wait_until(
        lambda: len(fleet.rows("SELECT 1 FROM step_executions WHERE status = 'running'")) == held,
        30,
        "the steps",
    )
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    assert fleet.cli("ticket", "cancel", "1").returncode == 0
    assert fleet.cli("ticket", "reopen", "1").returncode == 0
    since = store_now(fleet)
    wait_until(lambda: store_now(fleet) > since + 2.5, 30, "two leases")
    env = {**fleet.target.env, **timing}
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", "run-ticket", "1", "--wait"],
        env=env_for(fleet.home, **env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    mine = "SELECT * FROM workflow_runs WHERE ticket_id = 1 ORDER BY id"
    try:
        wait_until(
            lambda: [r["status"] for r in fleet.rows(mine)] == ["failed", "running"],
            60,
            "run-ticket to run the ticket",
        )
        runs = fleet.rows(mine)
        assert "stopped heartbeating" in runs[0]["error"], runs
        assert fleet.cli("ticket", "cancel", "1").returncode == 0
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out + err
    assert "ticket 1 cancelled" in out + err, out + err
    if held == 2:  # the other one went back to the queue, its run closed
        assert fleet.status(2) == "open"
        assert fleet.rows("SELECT status FROM workflow_runs WHERE ticket_id = 2")[0]["status"] in (
            "failed",
            "cancelled",
        )
