"""Rows of id 0 and below in `workflow_runs`, `step_executions`, `ticket_events` and
`step_logs` (only another client writes them: ids are any 64-bit integer). Every reader
that resumes "after" an id started after 0, so it never showed them: `logs` and `logs
--follow`, the API's log stream (`?after=`, `Last-Event-ID`), the metrics' event and
step readers. They now start before the smallest id a row can hold (-2^63): such rows
are shown once, in id order. Both stores; the real CLI and server."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Target
from tests.support.api import sse_events, start_api
from tests.support.cli import swarm_inproc

from swarm_engine.store import open_store

MIN = -(2**63)
TOKEN = "t0ken-for-the-ids-below-zero-test"
CHUNKS = [(MIN, "zeroth"), (-9, "first"), (0, "second"), (4, "third")]
"""(chunk id, its text), in id order: every chunk of the run's log."""


def home_with_low_ids(store_target: Target, tmp_path: Path) -> Path:
    """Ticket 7 ran (another client wrote it): run -5, steps -7 and 0, chunks `CHUNKS`,
    an event of id -3 (its claim)."""
    home = tmp_path / "home"
    made = swarm_inproc(home, "status", "--init", **store_target.env)
    assert made.returncode == 0, made.stderr
    store_target.sql(
        "INSERT INTO tickets (id, title, status, agent_id, inputs) VALUES"
        " (7, 't', 'done', 'echo', '{}');"
        " INSERT INTO workflow_runs (id, ticket_id, attempt, attempt_id, execution_mode,"
        " status) VALUES (-5, 7, 1, 'a-1', 'single', 'done');"
        " INSERT INTO step_executions (id, run_id, step_id, agent_name, agent_version,"
        " agent_kind, status) VALUES (-7, -5, 'a', 'echo', '1', 'echo', 'done'),"
        " (0, -5, 'b', 'echo', '1', 'echo', 'done');"
        " INSERT INTO step_logs (id, step_execution_id, data) VALUES"
        f" ({MIN}, -7, 'zeroth'), (-9, -7, 'first'), (0, 0, 'second'), (4, -7, 'third');"
        " INSERT INTO ticket_events (id, ticket_id, old_status, new_status, attempt_id)"
        " VALUES (-3, 7, 'open', 'claimed', 'a-1');"
    )
    return home


def test_every_reader_shows_rows_of_id_zero_and_below_once_in_order(
    store_target: Target, tmp_path: Path
) -> None:
    home = home_with_low_ids(store_target, tmp_path)
    env = store_target.env

    followed = swarm_inproc(home, "logs", "7", "--follow", **env)
    assert followed.returncode == 0, followed.stderr
    at = [followed.stdout.find(text) for _, text in CHUNKS]
    assert -1 not in at and at == sorted(at), followed.stdout
    assert all(followed.stdout.count(text) == 1 for _, text in CHUNKS), followed.stdout

    printed = swarm_inproc(home, "logs", "7", **env)  # step by step: a (-7), then b (0)
    assert printed.returncode == 0, printed.stderr
    at = [printed.stdout.find(t) for t in ("zeroth", "first", "third", "second")]
    assert -1 not in at and at == sorted(at), printed.stdout

    pinned = swarm_inproc(home, "logs", "7", "--run", "-5", "--step", "b", **env)
    assert pinned.returncode == 0 and "second" in pinned.stdout, pinned.stderr
    older = swarm_inproc(home, "ticket", "steps", "7", "--run", "-5", "--before", "0", **env)
    assert older.returncode == 0, older.stderr
    assert "a" in older.stdout and " b " not in older.stdout, older.stdout

    store = open_store(store_target.target)
    try:
        assert [e["id"] for e in store.tickets.events_after() if e["ticket_id"] == 7] == [-3]
        assert [s["id"] for s in store.runs.steps_after()] == [-7, 0]
        assert [s["id"] for s in store.runs.steps_after(-7)] == [0]
        assert [p.id for p in store.logs.after([-7, 0])] == [i for i, _ in CHUNKS]
        assert [p.id for p in store.logs.after([-7, 0], MIN)] == [-9, 0, 4]
    finally:
        store.close()

    api = start_api(home, token=TOKEN, **env)
    try:

        def stream(query: str = "", **headers: str) -> list[tuple[int, str]]:
            path = f"/v1/tickets/7/logs/stream{query}"
            with api.get(path, stream=True, headers=headers, timeout=60) as response:
                assert response.status_code == 200, response.text
                events = [e for e in sse_events(response) if e.get("event") == "log"]
            return [(int(e["id"]), json.loads(e["data"])["text"]) for e in events]

        assert stream() == CHUNKS
        assert stream("?after=-9") == CHUNKS[2:]
        assert stream(f"?after={MIN}") == CHUNKS[1:]
        assert stream(**{"Last-Event-ID": "-9"}) == CHUNKS[2:]
        assert stream(**{"Last-Event-ID": str(MIN)}) == CHUNKS[1:]
        assert stream("?run=-5&step=b") == CHUNKS[2:3]
        assert api.get("/v1/runs/-5").json()["id"] == -5
        page = api.get("/v1/runs/-5/steps?limit=1")  # pages on below step 0, to step -7
        assert [s["id"] for s in page.json()] == [0] and page.headers["X-Before"] == "0"
        assert [s["id"] for s in api.get("/v1/runs/-5/steps?before=0").json()] == [-7]
        assert api.get(f"/v1/runs/-5/steps?before={MIN}").json() == []
        assert [r["id"] for r in api.get("/v1/tickets/7/runs?before=0").json()] == [-5]
        assert [e["id"] for e in api.get("/v1/tickets/7/events?before=0").json()] == [-3]
        bad = api.get("/v1/tickets/7/logs/stream", headers={"Last-Event-ID": "--9"})
        assert bad.status_code == 400, bad.text
    finally:
        api.stop()
