"""`logs` of a ticket whose run failed before any step (its plan failed: a row another
client wrote with `inputs` `[1]`): one line saying the run has no steps, with its error
escaped as a step's error is. It printed nothing (exit 0), while `ticket show` points
there (tester, LOW). The API's download (`GET /v1/tickets/ID/logs`) is that line too,
verbatim, where it was an empty body."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Target
from tests.support.api import start_api
from tests.support.cli import swarm_inproc

TOKEN = "t0ken-for-the-no-steps-test"


def test_logs_of_a_run_without_steps(store_target: Target, tmp_path: Path) -> None:
    home, env = tmp_path / "home", store_target.env
    assert swarm_inproc(home, "status", "--init", **env).returncode == 0
    store_target.sql(
        "INSERT INTO tickets (title, status, agent_id, inputs) VALUES ('t', 'open', 'echo', '[1]')"
    )
    ran = swarm_inproc(home, "start", "--foreground", "--until-idle", **env)
    assert ran.returncode == 0, ran.stderr
    (run,) = store_target.rows("SELECT id, status, error FROM workflow_runs")
    assert run["status"] == "failed", run
    error = "ticket 1 row is malformed: inputs: must be a JSON object, not an array"
    assert run["error"] == error
    line = f"run {run['id']} has no steps (failed): error: {error}\n"
    for follow in ((), ("--follow",)):
        done = swarm_inproc(home, "logs", "1", *follow, **env)
        assert (done.returncode, done.stdout, done.stderr) == (0, line, ""), follow
    done = swarm_inproc(home, "logs", "1", "--step", "main", **env)
    assert done.returncode == 3
    assert done.stderr == f"error: run {run['id']} has no step 'main' (it has no steps)\n"
    # an error holding control characters (another client's): escaped as a step's is
    esc = "char(27)" if store_target.dialect == "sqlite" else "chr(27)"
    store_target.sql(f"UPDATE workflow_runs SET error = 'bad' || {esc} || '[31m red'")
    done = swarm_inproc(home, "logs", "1", **env)
    assert done.stdout == f"run {run['id']} has no steps (failed): error: bad\\x1b[31m red\n"
    api = start_api(home, token=TOKEN, **env)
    try:
        got = api.get("/v1/tickets/1/logs")
        assert got.status_code == 200, got.text
        assert got.text == f"run {run['id']} has no steps (failed): error: bad\x1b[31m red\n"
    finally:
        api.stop()
