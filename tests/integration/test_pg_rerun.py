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
from pathlib import Path
from typing import Any

import pytest
from tests.support.cli import env_for, swarm_inproc
from tests.support.pgdeadlock import Client, crossing, superuser, tries
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

CROSSING = crossing("tickets")
"""The store's insert into `tickets` crosses a client's transaction (`pgdeadlock`)."""


@pytest.fixture
def store(pg_store: Store) -> Store:
    return pg_store


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
def test_agent_register_runs_again_with_or_without_a_package(
    pg_url: str, tmp_path: Path, package: bool
) -> None:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", SWARM_DATABASE_URL=pg_url).returncode == 0
    psql(pg_url, ONE_AGENT)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "agent.yaml").write_text("name: mine\nkind: shell\ncommand: echo hi\n")
    if package:  # a file besides the definition: a package, swapped in by the transaction
        (folder / "data.txt").write_text("x")  # (after the insert: rolled back before it)
    done = swarm_inproc(home, "agent", "register", str(folder), SWARM_DATABASE_URL=pg_url)
    assert done.returncode == 0, done.stderr
    rows = pg_query(pg_url, "SELECT name FROM agents WHERE name = 'mine'")
    assert (tries(pg_url), rows) == (2, [{"name": "mine"}])
    if package:  # swapped in once, by the try that committed
        (link,) = (p for p in (home / "packages" / "mine").iterdir() if p.is_symlink())
        assert (link / "data.txt").read_text() == "x"


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
