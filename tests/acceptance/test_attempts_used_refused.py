"""An open row whose `attempts` another client wrote at or past its `max_attempts` (or
below 0) is failed by the engine that claims it without being run: no run row, its
`attempts` left as its writer stored them, the reason in its `error` and in the engine's
log (docs/schema.md, `max_attempts`). Before, the claim's count stayed (`ticket show`:
`4 of 3 attempts used`) and an empty failed run was recorded for a run that never was."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Target
from tests.support.cli import swarm, swarm_inproc

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}
# (attempts, max_attempts) as another client wrote them, on open rows
SPENT = [(3, 3), (100, 3), (-5, 3), (1, 1)]


def test_open_rows_past_their_attempts_fail_unrun_with_their_counts_kept(
    store_target: Target, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    made = swarm_inproc(home, "status", "--init", **store_target.env)
    assert made.returncode == 0, made.stderr
    values = ", ".join(f"('spent {a}/{m}', 'open', 'echo', {a}, {m}, '{{}}')" for a, m in SPENT)
    store_target.sql(
        "INSERT INTO tickets (title, status, agent_id, attempts, max_attempts, inputs)"
        f" VALUES {values}, ('good', 'open', 'echo', 2, 3, '{{\"k\": 1}}')"
    )
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=120,
                 **FAST, **store_target.env)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    rows = store_target.rows(
        "SELECT id, title, status, attempts, max_attempts, error FROM tickets ORDER BY id"
    )
    *spent, good = rows
    assert (good["status"], good["attempts"]) == ("done", 3), good  # its last attempt runs
    for row, (attempts, most) in zip(spent, SPENT, strict=True):
        assert row["status"] == "failed", row
        assert (row["attempts"], row["max_attempts"]) == (attempts, most), row  # as written
        error = row["error"]
        assert error.startswith(f"ticket {row['id']}: ") and "\n" not in error, error
        assert "counts its attempts from 0 again" in error, error
        assert error in done.stderr, done.stderr  # the engine's log says it once
        assert done.stderr.count(error) == 1, done.stderr
    ids = [row["id"] for row in spent]
    runs = store_target.rows("SELECT ticket_id FROM workflow_runs")
    assert [r["ticket_id"] for r in runs] == [good["id"]]  # no run for what never ran
    events = store_target.rows("SELECT ticket_id FROM ticket_events WHERE new_status = 'failed'")
    assert sorted(e["ticket_id"] for e in events) == ids
    shown = swarm_inproc(home, "ticket", "show", str(ids[0]), **store_target.env)
    assert shown.returncode == 0, shown.stderr
    assert "3 of 3 attempts used" in shown.stdout, shown.stdout
    # `ticket reopen` (the advice) runs it again from 0
    reopened = swarm_inproc(home, "ticket", "reopen", str(ids[0]), **store_target.env)
    assert reopened.returncode == 0, reopened.stderr
    again = swarm(home, "start", "--foreground", "--until-idle", timeout=120,
                  **FAST, **store_target.env)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    (row,) = store_target.rows("SELECT status, attempts FROM tickets WHERE id = %(id)s", id=ids[0])
    assert (row["status"], row["attempts"]) == ("done", 1), row
