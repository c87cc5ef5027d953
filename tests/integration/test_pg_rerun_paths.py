"""PostgreSQL: the store transactions that once had one try are run again from their start
when the server rolls them back to break a deadlock (`store/rerun.py`): lease renewal
with the heartbeat, the lease reclaim (its fence run again: idempotent), and `agent
register` of an agent with a package rolled back at its commit, after the swap (made
once, not again), and what its one line says when every try is rolled back. Real
server, real deadlocks (`tests/support/pgdeadlock.py`)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_reclaim_fence import running_step, sandbox
from tests.support.cli import env_for, wait_until
from tests.support.pgdeadlock import Client, crossing, superuser, tries
from tests.support.postgres import pg_query, psql

from swarm_engine.engine.enginerow import EngineRow
from swarm_engine.engine.gate import StoreGate
from swarm_engine.engine.leases import LeaseKeeper
from swarm_engine.engine.reaper import vm_fence
from swarm_engine.store import Store, open_store
from swarm_engine.store.reclaim import Expired
from swarm_engine.vm.proctree import pid_alive

HOST = "this-host"


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    if not superuser(pg_url):
        pytest.skip("setting the client's deadlock_timeout needs a superuser")
    opened = open_store(pg_url)
    try:
        yield opened
    finally:
        opened.close()


def crossed(url: str, call: Callable[[], Any]) -> Any:
    """`call()` on a thread of its own while a client's transaction crosses its first try
    (the trigger is installed); what it returned, or raises what it raised."""
    got: list[Any] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            got.append(call())
        except BaseException as exc:
            failed.append(exc)

    client = Client(url)
    worker = threading.Thread(target=run)
    worker.start()
    try:
        client.cross()  # raises (deadlock detected) if the server chose the client instead
    finally:
        worker.join(120)
        client.close()
    if failed:
        raise failed[0]
    assert pg_query(url, "SELECT n FROM marks") == [{"n": 1}]  # the client's commit
    return got[0]


REFUSING = """
CREATE FUNCTION refusing() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'no renewal for this one';
END $$;
CREATE TRIGGER refusing BEFORE UPDATE ON tickets FOR EACH ROW
  WHEN (NEW.attempt_id = :'v1') EXECUTE FUNCTION refusing();
"""
"""Another client's rule: the store refuses to renew the lease of attempt `v1`."""


@pytest.mark.parametrize("where", ["lease", "heartbeat", "fallback"])
def test_a_lease_renewal_rolled_back_runs_again_and_puts_the_row_back_once(
    store: Store, pg_url: str, where: str
) -> None:
    """`lease`: the renewal's first statement (the leases) is rolled back; `heartbeat`: its
    last, the stamp of the engine's row just put back (a deleted row, another writer's):
    the row is put back by the try that commits, counted and logged once. `fallback`: the
    store refuses the batch (one lease it will not renew), so each lease is renewed apart
    and then the heartbeat, whose transaction is the one rolled back."""
    row = EngineRow(store, "e", kind="daemon", host=HOST, pid=1, max_vms=1, backend="process")
    row.register()
    attempts, ids = {}, {}
    for title in ("kept", "refused") if where == "fallback" else ("kept",):
        attempts[title] = uuid.uuid4().hex
        ids[title] = ticket_id = store.tickets.create(title=title, agent_id="echo")
        store.tickets.claim(ticket_id, engine_id="e", attempt_id=attempts[title], lease_ttl=30)
    psql(pg_url, "DELETE FROM engines WHERE id = 'e'")
    lease = "SELECT lease_expires_at AS at FROM tickets WHERE title = 'kept'"
    before = pg_query(pg_url, lease)[0]["at"]
    if where == "fallback":
        psql(pg_url, REFUSING, attempts["refused"])
    psql(pg_url, crossing("tickets" if where == "lease" else "engines", "UPDATE"))
    gate = StoreGate()
    keeper = LeaseKeeper(
        store, gate, "e", lease_ttl=3600, heartbeat_interval=1, busy_vms=lambda: 0,
        restore_row=row.put_back, row_restored=row.note_put_back,
    )  # fmt: skip
    for title, attempt in attempts.items():  # (only the leases it holds are renewed)
        keeper.hold(ids[title], attempt, lambda reason: None, lambda exc: None)
    try:
        kept, refusals = crossed(pg_url, lambda: keeper.write(list(attempts.values())))
    finally:
        gate.close()
    assert kept == {attempts["kept"]}
    if where == "fallback":
        assert list(refusals) == [attempts["refused"]]
        assert "no renewal for this one" in str(refusals[attempts["refused"]])
    else:
        assert refusals == {}
    assert tries(pg_url) == 2  # the first try rolled back, the second kept
    assert pg_query(pg_url, lease)[0]["at"] > before  # renewed for an hour, from 30 s
    assert pg_query(pg_url, "SELECT id FROM engines WHERE heartbeat_at IS NOT NULL") == [
        {"id": "e"}
    ]
    assert row.restored == 1


def test_a_reclaim_rolled_back_runs_again_and_fences_again(
    store: Store, pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The reclaim's update of the expired ticket is rolled back, after the fence stopped
    its VM's sandbox: the next try fences again (nothing left to stop) and re-queues it."""
    home = tmp_path / "home"
    store.engines.register(
        "frozen", kind="daemon", host=HOST, pid=os.getpid(), max_vms=1, backend="process"
    )
    ticket_id = store.tickets.create(title="t", agent_id="s")
    running_step(store, ticket_id, "frozen", "vm-mine")
    proc = sandbox(home, "vm-mine")
    try:
        wait_until(lambda: pid_alive(proc.pid), 10, "the sandbox to start")
        psql(pg_url, "UPDATE tickets SET lease_expires_at = '2000-01-01T00:00:00Z'")
        psql(pg_url, crossing("tickets", "UPDATE"))
        got = crossed(pg_url, lambda: store.tickets.reclaim_expired(vm_fence(home, HOST)))
        assert proc.wait(timeout=10) is not None  # killed (a signal's delivery takes a moment)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert got == [Expired(ticket_id, "open")]
    assert tries(pg_url) == 2
    assert store.tickets.get(ticket_id).status == "open"
    assert "stopped VM vm-mine" in caplog.text
    runs = pg_query(
        pg_url, "SELECT status FROM workflow_runs WHERE ticket_id = %(t)s", {"t": ticket_id}
    )
    assert runs == [{"status": "failed"}]  # closed once, by the try that committed


def test_agent_register_rolled_back_at_its_commit_after_the_swap_runs_again(
    pg_url: str, tmp_path: Path
) -> None:
    """The package is swapped in inside the transaction, then its COMMIT is rolled back (a
    deferred trigger deadlocks): the next try writes the rows again and keeps the swap it
    made (its staged copy is gone: swapping again would fail), so one copy, linked."""
    if not superuser(pg_url):
        pytest.skip("setting the client's deadlock_timeout needs a superuser")
    home = tmp_path / "home"
    env = env_for(home, SWARM_DATABASE_URL=pg_url)
    init = subprocess.run(
        [sys.executable, "-m", "swarm_engine", "status", "--init"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "agent.yaml").write_text("name: mine\nkind: shell\ncommand: echo hi\n")
    (folder / "data.txt").write_text("x")
    psql(pg_url, crossing("agents", when="NEW.name = 'mine'", at_commit=True))

    def register() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "swarm_engine", "agent", "register", str(folder)],
            env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    done = crossed(pg_url, register)
    assert done.returncode == 0, done.stderr
    assert tries(pg_url) == 2
    assert pg_query(pg_url, "SELECT name FROM agents WHERE name = 'mine'") == [{"name": "mine"}]
    entries = sorted(p.name for p in (home / "packages" / "mine").iterdir())
    links = [e for e in entries if (home / "packages" / "mine" / e).is_symlink()]
    copies = [e for e in entries if e.startswith(".") and e != ".lock" and e not in links]
    assert len(links) == 1 and len(copies) == 1, entries
    assert (home / "packages" / "mine" / links[0] / "data.txt").read_text() == "x"
    assert not [p for p in (home / "packages").iterdir() if p.name.startswith(".staging-")]


@pytest.mark.parametrize("at_commit", [True, False], ids=["after-the-swap", "before-it"])
def test_agent_register_rolled_back_every_try_says_what_it_swapped(
    pg_url: str, tmp_path: Path, at_commit: bool
) -> None:
    """Every try rolled back (each one's deadlock crossed by the client): exit 6, one
    line. At the commit (after the swap) the line says the package folder was swapped in
    but the rows were not written, and that registering again writes them, which it does;
    on the rows (before any swap) it says no such thing, and no folder is swapped in."""
    if not superuser(pg_url):
        pytest.skip("setting the client's deadlock_timeout needs a superuser")
    from swarm_engine.store.rerun import TRIES

    home = tmp_path / "home"
    env = env_for(home, SWARM_DATABASE_URL=pg_url, SWARM_BUSY_TIMEOUT="120")  # (every try)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "agent.yaml").write_text("name: mine\nversion: 1.0.0\nkind: shell\ncommand: echo\n")
    (folder / "data.txt").write_text("x")

    def swarm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "swarm_engine", *args],
            env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    init = swarm("status", "--init")
    assert init.returncode == 0, init.stderr
    psql(pg_url, crossing("agents", when="NEW.name = 'mine'", at_commit=at_commit, every_try=True))
    client = Client(pg_url)
    got: list[subprocess.CompletedProcess[str]] = []
    worker = threading.Thread(target=lambda: got.append(swarm("agent", "register", str(folder))))
    worker.start()
    try:
        client.cross_each(TRIES)
    finally:
        worker.join(300)
        client.close()
    (done,) = got
    assert tries(pg_url) == TRIES
    assert pg_query(pg_url, "SELECT count(*) AS n FROM marks") == [{"n": TRIES}]
    lines = done.stderr.splitlines()
    assert done.returncode == 6 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and f"({TRIES} tries)" in lines[0], lines
    assert "deadlock detected" in lines[0], lines
    assert pg_query(pg_url, "SELECT name FROM agents WHERE name = 'mine'") == []
    link = home / "packages" / "mine" / "1.0.0"
    if at_commit:
        assert lines[0].endswith(
            f"; agent mine@1.0.0: its package folder was swapped in ({link}) but its rows"
            " were not written: registering it again writes them"
        ), lines
        assert link.is_symlink() and (link / "data.txt").read_text() == "x"
    else:
        assert "swapped" not in lines[0], lines
        assert not link.exists() and not link.is_symlink()
    psql(pg_url, "DROP TRIGGER crossing ON agents")
    again = swarm("agent", "register", str(folder))
    assert again.returncode == 0, again.stderr
    assert pg_query(pg_url, "SELECT name FROM agents WHERE name = 'mine'") == [{"name": "mine"}]
    assert link.is_symlink() and (link / "data.txt").read_text() == "x"
    assert not [p for p in (home / "packages").iterdir() if p.name.startswith(".staging-")]
