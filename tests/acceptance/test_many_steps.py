"""A run may have any number of step rows (any SQL client writes them): every view of it
stays bounded. `ticket show` (table and `--json`), `GET /v1/tickets/ID`, `/v1/runs/ID`
carry a run's newest `SHOWN_STEPS` steps with `steps_total` and `steps_before`;
`GET /v1/runs/ID/steps` and `ticket steps` page to the rest (each step once); `logs`
reads the steps a batch at a time, so its memory does not grow with their number."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.support.api import start_api
from tests.support.cli import env_for, swarm, swarm_inproc

from swarm_engine.service.logs import MAX_STEPS_LEFT_OUT, as_text
from swarm_engine.service.runs import MAX_PAGE_STEPS, SHOWN_STEPS
from swarm_engine.store import open_store

STEPS = 20_000
BLOB = 2000  # characters of outputs per step: 40 MB of them in all
MiB = 1024 * 1024


def add_run(home: Path, ticket: int, steps: int) -> None:
    """Ticket `ticket` with one run (id `ticket`) of `steps` step rows, each with an
    outputs blob and a line of log, as a SQL client writes them."""
    conn = sqlite3.connect(home / "tickets.db")
    with conn:
        conn.execute("INSERT INTO tickets (id, title, status, agent_id) VALUES (?, 't', 'done',"
                     " 'echo')", (ticket,))  # fmt: skip
        conn.execute(
            "INSERT INTO workflow_runs (id, ticket_id, attempt, attempt_id, execution_mode,"
            " status) VALUES (?, ?, 1, ?, 'workflow', 'done')",
            (ticket, ticket, f"a{ticket}"),
        )
        conn.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)"
            " INSERT INTO step_executions (run_id, step_id, agent_name, agent_version,"
            " agent_kind, status, inputs, outputs)"
            " SELECT ?, 's' || x, 'echo', '1.0.0', 'echo', 'done', '{}',"
            " '{\"blob\":\"' || hex(randomblob(?)) || '\"}' FROM c",
            (steps, ticket, BLOB // 2),
        )
        conn.execute(
            "INSERT INTO step_logs (step_execution_id, data)"
            " SELECT id, 'log of ' || step_id || char(10) FROM step_executions WHERE run_id = ?",
            (ticket,),
        )
    conn.close()


def step_ids(home: Path, run: int) -> list[int]:
    conn = sqlite3.connect(home / "tickets.db")
    try:
        rows = conn.execute("SELECT id FROM step_executions WHERE run_id = ? ORDER BY id", (run,))
        return [int(r[0]) for r in rows]
    finally:
        conn.close()


def test_views_of_a_run_with_many_steps_are_bounded_and_page_to_every_step(home: Path) -> None:
    add_run(home, 14, STEPS)
    ids = step_ids(home, 14)
    shown = swarm(home, "ticket", "show", "14", "--json", check=True)
    run = json.loads(shown.stdout)["runs"][0]
    assert [s["id"] for s in run["steps"]] == ids[-SHOWN_STEPS:]
    assert (run["steps_total"], run["steps_before"]) == (STEPS, ids[-SHOWN_STEPS])
    assert (
        f"run 14: {SHOWN_STEPS} of {STEPS} steps shown (the newest); {STEPS - SHOWN_STEPS}"
        f" older ones: swarm-engine ticket steps 14 --run 14 --before {ids[-SHOWN_STEPS]}"
    ) in shown.stderr
    table = swarm_inproc(home, "ticket", "show", "14")
    assert f"{SHOWN_STEPS} of {STEPS} steps shown" in table.stdout

    # the CLI pages through them all: each step once, oldest first once joined
    paged: list[int] = []
    args: tuple[str, ...] = ("ticket", "steps", "14", "--limit", str(MAX_PAGE_STEPS))
    while True:
        listed = swarm_inproc(home, *args)
        assert listed.returncode == 0, listed.stderr
        paged = [s["id"] for s in json.loads(listed.stdout)] + paged
        if "--before" not in listed.stderr:
            break
        args = (*args[:5], "--before", listed.stderr.split("--before ")[1].split()[0])
    assert paged == ids
    assert swarm_inproc(home, "ticket", "steps", "14", "--limit", "1001").returncode == 2

    server = start_api(home)
    try:
        got = server.get("/v1/tickets/14")
        assert got.status_code == 200 and len(got.content) < 2 * MiB
        api_run = got.json()["runs"][0]
        assert [s["id"] for s in api_run["steps"]] == ids[-SHOWN_STEPS:]
        assert (api_run["steps_total"], api_run["steps_before"]) == (STEPS, ids[-SHOWN_STEPS])
        one = server.get("/v1/runs/14").json()
        assert len(one["steps"]) == SHOWN_STEPS and one["steps_total"] == STEPS
        runs = server.get("/v1/tickets/14/runs").json()
        assert len(runs[0]["steps"]) == SHOWN_STEPS
        # GET /v1/runs/ID/steps pages as /runs and /events do: before, limit, X-Before
        seen: list[int] = []
        before: str | None = None
        while True:
            query = "?limit=1000" + (f"&before={before}" if before else "")
            page = server.get(f"/v1/runs/14/steps{query}")
            assert page.status_code == 200 and page.headers["X-Total-Count"] == str(STEPS)
            items = [s["id"] for s in page.json()]
            assert 0 < len(items) <= 1000
            seen = items + seen
            before = page.headers.get("X-Before")
            if before is None:
                break
        assert seen == ids  # every step exactly once
        first = server.get("/v1/runs/14/steps")
        assert [s["id"] for s in first.json()] == ids[-100:]
        assert first.headers["X-Before"] == str(ids[-100])
        assert server.get("/v1/runs/14/steps?limit=1001").status_code == 422
        assert server.get("/v1/runs/999/steps").status_code == 404
        page = server.get("/ui/tickets/14")
        assert page.status_code == 200 and page.text.count('class="step"') == SHOWN_STEPS
        assert f"{STEPS - SHOWN_STEPS} older: <code>GET /v1/runs/14/steps?before=" in page.text
    finally:
        server.stop()


def peak_of_logs(home: Path, ticket: int, *args: str) -> tuple[str, int]:
    """`swarm-engine logs TICKET ARGS`: what it printed and its peak RSS in bytes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", "logs", str(ticket), *args],
        env=env_for(home, COLUMNS="100"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    with proc.stdout:
        printed = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    return printed, usage.ru_maxrss * 1024


def test_logs_streams_a_run_of_many_steps_in_little_memory(home: Path) -> None:
    """`logs` over a run of 20,000 steps (40 MB of outputs) prints every step's log, in
    order, and peaks at about the memory it takes over a run of one step (reading all the
    step rows at once held them all)."""
    add_run(home, 14, STEPS)
    add_run(home, 15, 1)
    printed, peak = peak_of_logs(home, 14)
    assert printed.count(" · step ") == STEPS and printed.count("\nlog of s") == STEPS
    assert (
        printed.index("log of s1\n")
        < printed.index("log of s2\n")
        < printed.index(f"log of s{STEPS}\n")
    )
    _, small_peak = peak_of_logs(home, 15)
    assert peak - small_peak < 20 * MiB, f"peak RSS {peak} bytes, {small_peak} for one step"
    # --follow of the ended run: every chunk, then the newest steps' errors and the rest's way
    followed, follow_peak = peak_of_logs(home, 14, "--follow")
    assert followed.count("\nlog of s") == STEPS
    assert follow_peak - small_peak < 20 * MiB, f"--follow peak RSS {follow_peak} bytes"
    assert (
        f"(errors of the newest {SHOWN_STEPS} of {STEPS} steps; the {STEPS - SHOWN_STEPS}"
        " older ones: swarm-engine ticket steps 14 --run 14 --before "
    ) in followed


def test_the_log_download_names_a_bounded_number_of_left_out_steps(home: Path) -> None:
    """Past its cap, the one-text log (`GET /v1/tickets/ID/logs`) names at most
    `MAX_STEPS_LEFT_OUT` steps whose logs it left out, then one line for the rest."""
    add_run(home, 14, STEPS)
    store = open_store(home / "tickets.db")
    try:
        _, text = as_text(store, 14, most=1)
    finally:
        store.close()
    assert text.count("=== run 14 · step ") == 1 + MAX_STEPS_LEFT_OUT
    assert text.endswith(
        "[... the steps after these are left out too: the logs above hold 10 bytes, over this"
        " text's cap of 1; all of them: swarm-engine logs 14 --run 14, or"
        " GET /v1/tickets/14/logs/stream?run=14 ...]\n"
    )
    assert len(text) < 1_000_000
