"""PostgreSQL: a store transaction (or autocommit statement) the server rolls back to break
a deadlock (40P01) or a serialization conflict (40001) is run again from its start, a few
times, and only then reported busy (`store/rerun.py`). Real server, real deadlocks: a
client's transaction and the store's cross two advisory locks, which a trigger on
`tickets` takes (another client's rule, as the tests of refused writes install)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.support.cli import env_for, swarm_inproc, wait_until
from tests.support.postgres import pg_query, psql

from swarm_engine.errors import StoreBusyError, StoreRolledBackError
from swarm_engine.store import Store, open_store
from swarm_engine.store.rerun import TRIES

FAILING = """
CREATE SEQUENCE tries;
CREATE FUNCTION failing() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF nextval('tries') <= {fails} THEN
    RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '{code}';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER failing BEFORE INSERT ON tickets FOR EACH ROW EXECUTE FUNCTION failing();
"""
"""Each insert into `tickets` counts a try; the first `fails` are rolled back by the server
with SQLSTATE `code` (a sequence is not transactional: the count survives the rollback)."""

CROSSING = """
CREATE SEQUENCE tries;
CREATE FUNCTION crossing() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(1);
  IF nextval('tries') = 1 THEN  -- the first try waits (at most 60 s) for the client to
    FOR i IN 1..6000 LOOP       -- wait on lock 1, so that its own wait for lock 2 closes
      EXIT WHEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'  -- the cycle
                        AND objid = 1 AND NOT granted);
      PERFORM pg_sleep(0.01);  -- sleep-ok: the poll interval of a condition wait
    END LOOP;
  END IF;
  PERFORM pg_advisory_xact_lock(2);
  RETURN NEW;
END $$;
CREATE TRIGGER crossing BEFORE INSERT ON tickets FOR EACH ROW EXECUTE FUNCTION crossing();
"""
"""The store's insert takes advisory lock 1, then (first try only) waits until the client
waits on lock 1, then wants lock 2, which the client holds: a deadlock that the store's
own wait closes. PostgreSQL's check runs in the waiter whose `deadlock_timeout` (1 s)
ends first; the client's is set to 60 s, so the store's check finds the cycle and the
store's insert is the one rolled back, every time."""


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    opened = open_store(pg_url)
    try:
        yield opened
    finally:
        opened.close()


def tries(url: str) -> int:
    return int(psql(url, "SELECT last_value FROM tries"))


def tickets(url: str) -> list[dict[str, Any]]:
    return pg_query(url, "SELECT id, title FROM tickets ORDER BY id")


def test_a_statement_rolled_back_twice_runs_again_and_writes_once(
    store: Store, pg_url: str
) -> None:
    psql(pg_url, FAILING.format(fails=2, code="40001"))
    ticket_id = store.tickets.create(title="once", agent_id="echo")
    assert tries(pg_url) == 3
    assert tickets(pg_url) == [{"id": ticket_id, "title": "once"}]


def test_a_transaction_rolled_back_runs_again_from_its_start(store: Store, pg_url: str) -> None:
    # a trigger firing: its claim row, then its ticket, in one transaction; the ticket's
    # insert is rolled back once (a deadlock's code): the claim is made again, not kept
    psql(pg_url, FAILING.format(fails=1, code="40P01"))
    made = store.triggers.fire("nightly", "2026-12-03", workflow_id="wf", title="t", inputs={})
    assert made[1] is True and tries(pg_url) == 2
    assert tickets(pg_url) == [{"id": made[0], "title": "t"}]
    assert pg_query(pg_url, "SELECT count(*) AS n FROM trigger_firings")[0]["n"] == 1


def test_rolled_back_at_every_try_is_busy_with_one_line(store: Store, pg_url: str) -> None:
    psql(pg_url, FAILING.format(fails=1000, code="40001"))
    with pytest.raises(StoreBusyError) as caught:
        store.tickets.create(title="never", agent_id="echo")
    said = str(caught.value)
    assert isinstance(caught.value, StoreRolledBackError)
    assert "\n" not in said and said.endswith(f"could not serialize access ({TRIES} tries)")
    assert tries(pg_url) == TRIES
    assert tickets(pg_url) == []


def test_no_try_waits_past_the_busy_timeout(pg_url: str) -> None:
    quick = open_store(pg_url, busy_timeout=0.001)  # less than the first pause (10 ms+)
    psql(pg_url, FAILING.format(fails=1000, code="40001"))
    try:
        with pytest.raises(StoreRolledBackError, match=r"could not serialize access$"):
            quick.tickets.create(title="never", agent_id="echo")
    finally:
        quick.close()
    assert tries(pg_url) == 1


def test_other_rollback_codes_are_not_run_again(store: Store, pg_url: str) -> None:
    # 40003: whether the statement completed is unknown: running it again might write twice
    psql(pg_url, FAILING.format(fails=1000, code="40003"))
    with pytest.raises(StoreBusyError) as caught:
        store.tickets.create(title="never", agent_id="echo")
    assert not isinstance(caught.value, StoreRolledBackError)
    assert tries(pg_url) == 1


class Client:
    """Another client's transaction crossing the store's: holds lock 2, then (once the
    store holds lock 1) waits on lock 1 until the server rolls the store's insert back."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url)
        self.conn.execute("SET deadlock_timeout = '60s'")  # (a superuser's setting)
        self.conn.execute("CREATE TABLE IF NOT EXISTS marks (n int)")
        self.conn.commit()
        self.conn.execute("SELECT pg_advisory_xact_lock(2)")
        self.conn.execute("INSERT INTO marks VALUES (1)")

    def cross(self) -> None:
        wait_until(
            lambda: self.conn.execute(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 1 AND granted"
                " AND pid <> pg_backend_pid()"
            ).fetchone(),
            60,
            "the store's insert to hold lock 1",
        )
        self.conn.execute("SELECT pg_advisory_xact_lock(1)")  # granted once the store's
        self.conn.commit()  # insert is rolled back; the store's next try waits for this

    def close(self) -> None:
        self.conn.close()


def superuser(url: str) -> bool:
    return psql(url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == "t"


@pytest.mark.parametrize("write", ["statement", "transaction"])
def test_a_real_deadlock_rolls_the_store_back_and_its_next_try_writes(
    store: Store, pg_url: str, write: str
) -> None:
    """`statement`: `ticket create`'s one insert, outside a transaction; `transaction`: a
    trigger's firing (its claim row, then its ticket: the claim is made again, not kept)."""
    if not superuser(pg_url):
        pytest.skip("setting the client's deadlock_timeout needs a superuser")
    psql(pg_url, CROSSING)
    client = Client(pg_url)
    made: list[int | None] = []
    failed: list[BaseException] = []

    def create() -> None:
        try:
            if write == "statement":
                made.append(store.tickets.create(title="crossed", agent_id="echo"))
            else:
                fired = store.triggers.fire("t", "k", workflow_id="wf", title="crossed", inputs={})
                assert fired[1] is True, fired
                made.append(fired[0])
        except BaseException as exc:
            failed.append(exc)

    writer = threading.Thread(target=create)
    writer.start()
    try:
        client.cross()  # raises (deadlock detected) if the server chose the client instead
    finally:
        writer.join(120)
        client.close()
    assert not failed, failed
    assert tries(pg_url) == 2  # the first insert rolled back, the second kept
    assert tickets(pg_url) == [{"id": made[0], "title": "crossed"}]
    assert pg_query(pg_url, "SELECT n FROM marks") == [{"n": 1}]  # the client's commit


def test_ticket_create_rides_out_a_deadlock(pg_url: str, tmp_path: Path) -> None:
    if not superuser(pg_url):
        pytest.skip("setting the client's deadlock_timeout needs a superuser")
    home = tmp_path / "home"
    env = env_for(home, SWARM_DATABASE_URL=pg_url)
    init = subprocess.run(
        [sys.executable, "-m", "swarm_engine", "status", "--init"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    psql(pg_url, CROSSING)
    client = Client(pg_url)
    command = subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", "ticket", "create", "--title", "crossed",
         "--agent", "echo", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client.cross()
        out, err = command.communicate(timeout=120)
    finally:
        if command.poll() is None:
            command.kill()
            command.communicate()
        client.close()
    assert command.returncode == 0, err
    assert tries(pg_url) == 2
    assert tickets(pg_url) == [{"id": json.loads(out)["id"], "title": "crossed"}]
    assert pg_query(pg_url, "SELECT n FROM marks") == [{"n": 1}]


ONE_AGENT = """
CREATE SEQUENCE tries;
CREATE FUNCTION failing() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.name = 'mine' AND nextval('tries') <= 1 THEN
    RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER failing BEFORE INSERT ON agents FOR EACH ROW EXECUTE FUNCTION failing();
"""
"""The first insert of agent `mine` is rolled back as a deadlock's would be."""


@pytest.mark.parametrize("package", [False, True])
def test_agent_register_runs_again_only_without_a_package(
    pg_url: str, tmp_path: Path, package: bool
) -> None:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", SWARM_DATABASE_URL=pg_url).returncode == 0
    psql(pg_url, ONE_AGENT)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "agent.yaml").write_text("name: mine\nkind: shell\ncommand: echo hi\n")
    if package:  # a file besides the definition: a package, swapped in by the transaction
        (folder / "data.txt").write_text("x")
    done = swarm_inproc(home, "agent", "register", str(folder), SWARM_DATABASE_URL=pg_url)
    rows = pg_query(pg_url, "SELECT name FROM agents WHERE name = 'mine'")
    if package:  # one try: a busy store, one line, exit 6, nothing registered
        assert done.returncode == 6, done.stderr
        assert done.stderr.strip().count("\n") == 0
        assert done.stderr.strip().endswith("is unavailable for now: deadlock detected")
        assert (tries(pg_url), rows) == (1, [])
    else:
        assert done.returncode == 0, done.stderr
        assert (tries(pg_url), rows) == (2, [{"name": "mine"}])


def test_ticket_create_rolled_back_at_every_try_exits_6_with_one_line(
    pg_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", SWARM_DATABASE_URL=pg_url).returncode == 0
    psql(pg_url, FAILING.format(fails=1000, code="40P01"))
    done = swarm_inproc(
        home, "ticket", "create", "--title", "never", "--agent", "echo", SWARM_DATABASE_URL=pg_url
    )
    assert done.returncode == 6, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: database postgresql://")
    assert line.endswith(f"is unavailable for now: could not serialize access ({TRIES} tries)")
    assert (tries(pg_url), tickets(pg_url)) == (TRIES, [])
