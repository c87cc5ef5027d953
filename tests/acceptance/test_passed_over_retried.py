"""A ticket an engine passes over (its claim and its failing ignored by a trigger) is
tried again after a while (`store/passover.py`: 60 heartbeat intervals), so dropping the
trigger lets it run, once, without restarting the engine; one warning line a retry."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.acceptance.conftest import stop, write_agent
from tests.conftest import Target
from tests.support.cli import start_engine, swarm_inproc, wait_until

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.1", "SWARM_POLL_INTERVAL": "0.2", "SWARM_LEASE_TTL": "3"}
"""Tickets passed over are tried again after 60 x 0.1 s = 6 s."""

IGNORE = {
    "sqlite": "CREATE TRIGGER t BEFORE UPDATE OF status ON tickets WHEN OLD.id = 1"
    " BEGIN SELECT RAISE(IGNORE); END;",
    "postgresql": "CREATE FUNCTION ignore_one() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN IF OLD.id = 1 THEN RETURN NULL; END IF; RETURN NEW; END $$;"
    " CREATE TRIGGER t BEFORE UPDATE OF status ON tickets"
    " FOR EACH ROW EXECUTE FUNCTION ignore_one();",
}
DROP = {"sqlite": "DROP TRIGGER t;", "postgresql": "DROP TRIGGER t ON tickets;"}


def test_a_passed_over_ticket_runs_once_its_trigger_is_dropped(
    store_target: Target, tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    home = tmp_path / "home"
    env = store_target.env
    write_agent(tmp_path / "say", "name: say\nkind: shell\ncommand: echo hi\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "say"), **env).returncode == 0
    store_target.sql(IGNORE[store_target.dialect])
    for i in range(2):
        made = swarm_inproc(home, "ticket", "create", "--title", f"t{i}", "--agent", "say", **env)
        assert made.returncode == 0, made.stderr
    proc = start_engine(home, "--max-vms", "1", **FAST, **env)
    engines.append(proc)

    def status(tid: int) -> str:
        return str(store_target.rows(f"SELECT status FROM tickets WHERE id = {tid}")[0]["status"])

    # ticket 1 is the older: chosen first, passed over, then ticket 2 runs
    wait_until(lambda: status(2) == "done", 60, "ticket 2 to run past ticket 1")
    assert status(1) == "open"
    store_target.sql(DROP[store_target.dialect])
    wait_until(lambda: status(1) == "done", 60, "ticket 1 to run once its trigger is gone")
    runs = store_target.rows("SELECT ticket_id FROM workflow_runs WHERE ticket_id = 1")
    assert len(runs) == 1, runs
    assert proc.poll() is None
    out = stop(proc)
    assert "Traceback" not in out, out
    said = [x for x in out.splitlines() if "passes it over" in x]
    assert said and all("ticket 1: " in x for x in said), out
