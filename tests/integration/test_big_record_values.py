"""The text and JSON columns of a ticket's error, its events, runs and steps as any client
may write them: over their caps (`MAX_ERROR_BYTES`, `MAX_NOTE_BYTES`,
`MAX_RECORD_JSON_BYTES`) each is a row defect, and the store's reads hand over only a
text's first 200 characters (with its size) and never a JSON value (read as null): a
`ticket show --json`, `logs` or `GET /v1/tickets/<id>` of such rows stays small (with 60 MB
in each, they answered 720 MB)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import Target
from tests.support.api import start_api
from tests.support.cli import swarm_inproc

from swarm_engine.records import MAX_ERROR_BYTES, MAX_NOTE_BYTES, MAX_RECORD_JSON_BYTES
from swarm_engine.store import open_store

TOKEN = "a-token-for-the-big-record-values"
TEXT = 2 * MAX_ERROR_BYTES
"""The size of each text written (over the caps of errors, stop reasons and notes)."""
JSON_CHARS = MAX_RECORD_JSON_BYTES + 1000


def text(target: Target, n: int) -> str:
    """SQL for `n` x's, made by the server (no statement of megabytes)."""
    if target.dialect == "sqlite":
        return f"replace(hex(zeroblob({n})), '00', 'x')"
    return f"repeat('x', {n})"


def big_json(target: Target) -> str:
    """SQL for a JSON object holding more than `MAX_RECORD_JSON_BYTES`."""
    if target.dialect == "sqlite":
        return f"json_object('big', {text(target, JSON_CHARS)})"
    return f"jsonb_build_object('big', {text(target, JSON_CHARS)})"


def write_rows(target: Target) -> None:
    """Ticket 1, failed, with a run and a step, each value over its cap, as another client
    writes them."""
    t, j = text(target, TEXT), big_json(target)
    target.sql(
        "INSERT INTO tickets (title, status, agent_id, inputs, error)"
        f" VALUES ('big errors', 'failed', 'echo', '{{}}', {t})"
    )
    target.sql(f"UPDATE ticket_events SET note = {t} WHERE ticket_id = 1")
    target.sql(
        "INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, execution_mode,"
        " workflow_name, status, inputs, outputs, error)"
        f" VALUES (1, 1, 'a-1', 'single', 'w', 'failed', {j}, {j}, {t})"
    )
    target.sql(
        "INSERT INTO step_executions (run_id, step_id, agent_name, agent_version, agent_kind,"
        f" status, inputs, outputs, error, stop_reason) VALUES (1, 'only', 'echo', '1',"
        f" 'command', 'failed', {j}, {j}, {t}, {t})"
    )


TEXT_OVER = f"{TEXT:,} bytes of text, more than the 64 KiB it may hold"
NOTE_OVER = f"{TEXT:,} bytes of text, more than the 4 KiB it may hold"
JSON_OVER = re.compile(r"[\d,]+ bytes of JSON, more than the 8 MiB it may hold \(not read\)")


def assert_json_over(defects: list[str], name: str) -> None:
    (line,) = [d for d in defects if d.startswith(f"{name}: ")]
    assert JSON_OVER.fullmatch(line.removeprefix(f"{name}: ")), line


def check_run(run: dict[str, object]) -> None:
    assert run["inputs"] is None and run["outputs"] is None
    assert run["error"] == "x" * 200
    defects = run["defects"]
    assert isinstance(defects, list) and len(defects) == 3, defects
    assert f"error: {TEXT_OVER}" in defects
    assert_json_over(defects, "inputs")
    assert_json_over(defects, "outputs")
    assert not any(key.endswith("_bytes") for key in run)


def check_step(step: dict[str, object]) -> None:
    assert step["inputs"] is None and step["outputs"] is None
    assert step["error"] == "x" * 200 and step["stop_reason"] == "x" * 200
    defects = step["defects"]
    assert isinstance(defects, list) and len(defects) == 4, defects
    assert f"error: {TEXT_OVER}" in defects and f"stop_reason: {TEXT_OVER}" in defects
    assert_json_over(defects, "inputs")
    assert_json_over(defects, "outputs")
    assert not any(key.endswith("_bytes") for key in step)


def test_errors_notes_and_run_values_over_their_caps_are_read_as_their_start(
    store_target: Target, tmp_path: Path
) -> None:
    assert MAX_NOTE_BYTES < MAX_ERROR_BYTES < TEXT
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", **store_target.env).returncode == 0
    write_rows(store_target)

    store = open_store(store_target.target)
    try:
        ticket = store.tickets.get(1)
        assert ticket.error == "x" * 200
        assert ticket.defects == (f"error: {TEXT_OVER}",)
        (event,) = store.tickets.events(1)
        assert event["note"] == "x" * 200 and event["defects"] == [f"note: {NOTE_OVER}"]
        assert "note_bytes" not in event
        store_target.sql(  # a run's end, as metrics reads it (how the note begins)
            "INSERT INTO ticket_events (ticket_id, old_status, new_status, note)"
            f" VALUES (1, 'running', 'failed', {text(store_target, TEXT)})"
        )
        (metric,) = store.tickets.events_after(0)
        assert metric["note"] == "x" * 200
        (run,) = store.runs.runs_for_ticket(1)
        check_run(run)
        check_run(store.runs.get_run(1))
        check_run(store.runs.recent_runs(5)[0])
        check_run(store.runs.runs_for_workflow("w", 5)[0])
        for steps in (store.runs.steps(1), store.runs.last_steps(1, 5),
                      store.runs.steps_from(1, 0, 5), store.runs.steps_by_ids(1, [1]),
                      store.runs.steps_from(1, 0, 5, step_id="only")):  # fmt: skip
            (step,) = steps
            check_step(step)
    finally:
        store.close()

    shown = swarm_inproc(home, "ticket", "show", "1", "--json", **store_target.env)
    assert shown.returncode == 0, shown.stderr
    assert len(shown.stdout) < 64 * 1024
    assert json.loads(shown.stdout)["defects"] == [f"error: {TEXT_OVER}"]
    human = swarm_inproc(home, "ticket", "show", "1", **store_target.env)
    assert len(human.stdout) < 64 * 1024 and TEXT_OVER in human.stdout
    logs = swarm_inproc(home, "logs", "1", **store_target.env)
    assert len(logs.stdout) + len(logs.stderr) < 64 * 1024

    api = start_api(home, token=TOKEN, **store_target.env)
    try:
        one = api.get("/v1/tickets/1")
        assert one.status_code == 200 and len(one.content) < 64 * 1024
        assert one.json()["defects"] == [f"error: {TEXT_OVER}"]
    finally:
        api.stop()


def test_values_within_their_caps_are_read_whole(store_target: Target, tmp_path: Path) -> None:
    """At their caps exactly, the values are handed over whole, with no defect."""
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", **store_target.env).returncode == 0
    err, note = text(store_target, MAX_ERROR_BYTES), text(store_target, MAX_NOTE_BYTES)
    store_target.sql(
        "INSERT INTO tickets (title, status, agent_id, inputs, error)"
        f" VALUES ('fits', 'failed', 'echo', '{{}}', {err})"
    )
    store_target.sql(f"UPDATE ticket_events SET note = {note} WHERE ticket_id = 1")
    store_target.sql(
        "INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, execution_mode, status,"
        f" inputs, outputs, error) VALUES (1, 1, 'a-1', 'single', 'failed', '{{\"n\": 1}}',"
        f" '[2]', {err})"
    )
    store = open_store(store_target.target)
    try:
        ticket = store.tickets.get(1)
        assert ticket.error == "x" * MAX_ERROR_BYTES and ticket.defects == ()
        (event,) = store.tickets.events(1)
        assert event["note"] == "x" * MAX_NOTE_BYTES and "defects" not in event
        (run,) = store.runs.runs_for_ticket(1)
        assert run["inputs"] == {"n": 1} and run["outputs"] == [2]
        assert run["error"] == "x" * MAX_ERROR_BYTES and "defects" not in run
    finally:
        store.close()
