"""Real PostgreSQL deadlocks, made deterministic (tests of `store/rerun.py`): a trigger on
a table the store writes takes advisory lock 1, then (first try only) waits until another
client (`Client`) waits on lock 1, then wants lock 2, which that client holds. The store's
own wait closes the cycle; PostgreSQL's check runs in the waiter whose `deadlock_timeout`
(1 s) ends first, and the client's is 60 s, so the store's statement (or commit) is the
one rolled back, every time. The sequence `tries` counts the trigger's firings (a sequence
is not transactional: the count survives the rollback). With `every_try`, each try waits
for the client, which crosses as many tries as it is told (`Client.cross_each`): every
one is rolled back."""

from __future__ import annotations

import psycopg

from tests.support.cli import wait_until
from tests.support.postgres import psql

CROSSING_FUNCTION = """
CREATE SEQUENCE tries;
CREATE FUNCTION crossing() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(1);
  IF {waits} THEN  -- the first try (or each: every_try) waits (at most 60 s)
    FOR i IN 1..6000 LOOP  -- for the client to wait on lock 1, so that its own wait
      EXIT WHEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'  -- for lock 2
                        AND objid = 1 AND NOT granted);  -- closes the cycle
      PERFORM pg_sleep(0.01);  -- sleep-ok: the poll interval of a condition wait
    END LOOP;
  END IF;
  PERFORM pg_advisory_xact_lock(2);
  RETURN NEW;
END $$;
"""


def crossing(
    table: str,
    event: str = "INSERT",
    *,
    when: str = "",
    at_commit: bool = False,
    every_try: bool = False,
) -> str:
    """SQL installing the crossing trigger on `table`, before each row's `event` (`when`:
    an SQL condition on NEW, or every row); `at_commit`: a constraint trigger deferred to
    the commit, so that it is the COMMIT that the server rolls back; `every_try`: each
    firing waits for the client, not the first only."""
    condition = f"WHEN ({when})" if when else ""
    if at_commit:
        trigger = (
            f"CREATE CONSTRAINT TRIGGER crossing AFTER {event} ON {table}"
            " DEFERRABLE INITIALLY DEFERRED"
        )
    else:
        trigger = f"CREATE TRIGGER crossing BEFORE {event} ON {table}"
    waits = "nextval('tries') > 0" if every_try else "nextval('tries') = 1"
    function = CROSSING_FUNCTION.replace("{waits}", waits)
    return f"{function}{trigger} FOR EACH ROW {condition} EXECUTE FUNCTION crossing();"


class Client:
    """Another client's transaction crossing the store's: holds lock 2, then (once the
    store holds lock 1) waits on lock 1 until the server rolls the store's write back."""

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
            "the store's write to hold lock 1",
        )
        self.conn.execute("SELECT pg_advisory_xact_lock(1)")  # granted once the store's
        self.conn.commit()  # write is rolled back; the store's next try waits for this

    def cross_each(self, times: int) -> None:
        """Cross the store's next `times` tries (a trigger made with `every_try`): after
        each one's rollback, hold lock 2 again, in a new transaction, for the next."""
        for n in range(times):
            if n:
                self.conn.execute("SELECT pg_advisory_xact_lock(2)")
                self.conn.execute("INSERT INTO marks VALUES (1)")
            self.cross()

    def close(self) -> None:
        self.conn.close()


def superuser(url: str) -> bool:
    return psql(url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == "t"


def tries(url: str) -> int:
    return int(psql(url, "SELECT last_value FROM tries"))
