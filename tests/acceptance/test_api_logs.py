"""Live step logs over the API as server-sent events, on SQLite and PostgreSQL: lines arrive
while the step still runs, the stream ends with the ticket, and a client that reconnects
with `Last-Event-ID` gets exactly the chunks after that one. Also the fleet endpoints while
an engine holds a VM."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.acceptance.conftest import engine_ready, stop
from tests.conftest import Target
from tests.support.api import Api, sse_events, start_api
from tests.support.cli import start_engine, swarm_inproc, wait_until

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}
TOKEN = "t0ken-for-the-log-tests"
WAITS = """\
name: waits
kind: shell
command: "echo first line; while [ ! -e go ]; do sleep 0.05; done; echo second line; echo third line >&2"
"""


@dataclass
class Live:
    home: Path
    target: Target
    api: Api
    engine: subprocess.Popen[str]

    def create(self, *args: str) -> int:
        done = swarm_inproc(self.home, "ticket", "create", "--json", *args, **self.target.env)
        assert done.returncode == 0, done.stderr
        return int(json.loads(done.stdout)["id"])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp(f"sse-{request.param}")
    home = tmp / "home"
    if request.param == "sqlite":
        target = Target("sqlite", home / "tickets.db", {})
    else:
        url = request.getfixturevalue("postgres").create_database()
        target = Target("postgresql", url, {"SWARM_DATABASE_URL": url})
    (tmp / "waits").mkdir()
    (tmp / "waits" / "agent.yaml").write_text(WAITS)
    for args in (("status", "--init"), ("agent", "register", str(tmp / "waits"))):
        assert swarm_inproc(home, *args, **target.env).returncode == 0
    engine = start_engine(home, "--max-vms", "2", **target.env, **FAST)
    api = start_api(home, token=TOKEN, **target.env)
    try:
        if target.dialect == "sqlite":
            engine_ready(home, engine)
        yield Live(home, target, api, engine)
    finally:
        api.stop()
        stop(engine)


def stream(api: Api, ticket: int, **headers: str) -> Any:
    return api.get(f"/v1/tickets/{ticket}/logs/stream", stream=True, headers=headers, timeout=60)


def test_lines_arrive_while_the_step_runs_and_the_stream_ends_with_the_ticket(live: Live) -> None:
    ticket = live.create("--title", "live", "--agent", "waits")
    with stream(live.api, ticket) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
        first = next(events)
        assert first["event"] == "log" and int(first["id"]) > 0
        data = json.loads(first["data"])
        assert data["text"] == "first line\n" and data["step_id"] == "main" and data["attempt"] == 1
        # the step waits for its signal file: it is still running, the stream still open
        assert (
            live.target.rows("SELECT status FROM tickets WHERE id = %(t)s", t=ticket)[0]["status"]
            == "running"
        )
        busy = wait_until(lambda: [v for v in live.api.get("/v1/vms").json()
                                   if v["state"] == "busy"], 30, "a busy VM")  # fmt: skip
        assert (
            live.api.get(f"/v1/vms/{busy[0]['id']}").json()["step_execution_id"]
            == (data["step_execution_id"])
        )
        engines = live.api.get("/v1/engines").json()
        assert [e["pid"] for e in engines] == [live.engine.pid] and engines[0]["busy_vms"] == 1
        (host,) = live.api.get("/v1/hosts").json()
        assert (host["slots"], host["busy"], host["free"]) == (2, 1, 1)
        assert "swarm_vm_slots" in live.api.get("/metrics").text
        (Path(busy[0]["workspace"]) / "go").write_text("")
        rest = list(events)
    texts = "".join(json.loads(e["data"])["text"] for e in rest if e["event"] == "log")
    assert texts == "second line\n[stderr] third line\n"
    ids = [int(first["id"])] + [int(e["id"]) for e in rest if e["event"] == "log"]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    end = rest[-1]
    assert end["event"] == "end" and "id" not in end
    assert json.loads(end["data"])["status"] == "done"
    assert json.loads(end["data"])["steps"][0]["status"] == "done"


def test_resume_from_last_event_id(live: Live) -> None:
    ticket = live.create("--title", "again", "--agent", "waits")
    with stream(live.api, ticket) as response:
        events = sse_events(response)
        first = next(events)
        workspace = wait_until(lambda: [v["workspace"] for v in live.api.get("/v1/vms").json()
                                        if v["state"] == "busy"], 30, "the VM")  # fmt: skip
    # the client went away after the first chunk; the step goes on without it
    (Path(workspace[0]) / "go").write_text("")
    with stream(live.api, ticket, **{"Last-Event-ID": first["id"]}) as response:
        resumed = list(sse_events(response))
    logs = [e for e in resumed if e["event"] == "log"]
    assert logs and all(int(e["id"]) > int(first["id"]) for e in logs)
    assert "".join(json.loads(e["data"])["text"] for e in logs) == (
        "second line\n[stderr] third line\n"
    )
    assert resumed[-1]["event"] == "end"
    # from the start, after the ticket ended: everything, then the end at once
    with stream(live.api, ticket) as response:
        whole = [e for e in sse_events(response) if e["event"] == "log"]
    assert [e["id"] for e in whole] == [first["id"]] + [e["id"] for e in logs]
    with live.api.get(f"/v1/tickets/{ticket}/logs/stream", params={"after": logs[-1]["id"]},
                      stream=True) as response:  # fmt: skip
        assert [e["event"] for e in sse_events(response)] == ["end"]
    text = live.api.get(f"/v1/tickets/{ticket}/logs").text
    assert text.endswith("first line\nsecond line\n[stderr] third line\n")


def test_a_draft_stream_ends_at_once(live: Live) -> None:
    ticket = live.create("--title", "draft", "--agent", "waits", "--draft")
    with stream(live.api, ticket) as response:
        events = list(sse_events(response))
    assert [e["event"] for e in events] == ["end"]
    assert json.loads(events[0]["data"])["never_ran"] is True


def test_sigterm_ends_an_open_stream_at_once_and_serve_says_one_line(live: Live) -> None:
    """SIGTERM while a live stream of a running ticket is open: the stream ends (without
    an `end` event: the ticket still runs; a client reconnects with `Last-Event-ID`) well
    before the 5 s open requests are given, and `serve` exits 0 with its one line. It used
    to hold the stream until uvicorn cancelled it, printing ~60 lines of traceback."""
    ticket = live.create("--title", "held open", "--agent", "waits")
    api = start_api(live.home, token=TOKEN, **live.target.env)
    try:
        with stream(api, ticket) as response:
            events = sse_events(response)
            first = next(events)
            assert first["event"] == "log", first
            started = time.monotonic()
            api.proc.terminate()  # SIGTERM
            rest = list(events)  # ends when the server ends the response
            took = time.monotonic() - started
        assert [e["event"] for e in rest] == [], rest
        assert took < 3, f"the stream took {took:.1f}s to end"
        api.proc.wait(timeout=30)
    finally:
        said = api.stop()
        busy = wait_until(lambda: [v for v in live.api.get("/v1/vms").json()
                                   if v["state"] == "busy"], 30, "a busy VM")  # fmt: skip
        for vm in busy:
            (Path(vm["workspace"]) / "go").write_text("")
        wait_until(lambda: live.api.get(f"/v1/tickets/{ticket}").json()["status"] == "done",
                   60, "the held ticket done")  # fmt: skip
    assert api.proc.returncode == 0, said
    assert "Traceback" not in said and "Exception in ASGI" not in said, said
    assert "Cancel" not in said, said
    assert said.rstrip().splitlines()[-1] == (
        "API stopped (SIGTERM): open requests were given their time to end"
    ), said
