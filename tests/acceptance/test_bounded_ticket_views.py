"""One answer about tickets stays bounded, and never hides rows silently: `ticket list`
says how to see the tickets a page left out (past `--limit`, or sooner when the page's
tickets are large), and a ticket's detail (`ticket show`, `GET /v1/tickets/ID`, its page)
shows its newest runs and events with how many there are and how to page to the rest."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from tests.conftest import Target
from tests.integration.test_big_record_values import text
from tests.support.api import start_api
from tests.support.cli import swarm, swarm_inproc

from swarm_engine.cli.text import NAME_CHARS
from swarm_engine.records import MAX_ERROR_BYTES
from swarm_engine.service import runs as views
from swarm_engine.service.runs import SHOWN_RUNS, SHOWN_STEPS
from swarm_engine.service.tickets import PAGE_BYTES, SHOWN_EVENTS


def sql(home: Path, script: str, *args: object) -> None:
    conn = sqlite3.connect(home / "tickets.db")
    with conn:
        if args:
            conn.execute(script, args)
        else:
            conn.executescript(script)
    conn.close()


def test_ticket_list_says_how_to_see_what_a_page_left_out(home: Path) -> None:
    big = json.dumps({"blob": "x" * (PAGE_BYTES // 2 + 1024)})  # (a ticket holds <= 8 MiB)
    for tid, inputs in ((1, "{}"), (2, big), (3, big)):
        sql(home, "INSERT INTO tickets (id, title, status, agent_id, inputs)"
                  " VALUES (?, ?, 'done', 'echo', ?)", tid, f"t{tid}", inputs)  # fmt: skip
    seen: list[int] = []
    args: tuple[str, ...] = ("ticket", "list", "--status", "done", "--json")
    while True:
        done = swarm_inproc(home, *args)
        assert done.returncode == 0, done.stderr
        seen += [t["id"] for t in json.loads(done.stdout)]
        if "--cursor" not in done.stderr:
            break
        assert "ended early" in done.stderr
        args = (*args[:4], "--json", "--cursor", done.stderr.split("--cursor")[1].split()[0])
    assert seen == [3, 2, 1]  # every ticket, each once, over two pages
    first = swarm_inproc(home, "ticket", "list")
    assert "ended early" in first.stdout and "--cursor 3" in first.stdout
    limited = swarm_inproc(home, "ticket", "list", "--limit", "1", "--cursor", "2")
    assert "t1" in limited.stdout and "--cursor" not in limited.stdout


def test_ticket_detail_shows_the_newest_runs_and_events_and_how_to_page(home: Path) -> None:
    sql(
        home,
        "INSERT INTO tickets (id, title, status, agent_id) VALUES (7, 't', 'done', 'echo');"
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)"
        " INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, execution_mode, status)"
        " SELECT 7, i, 'a' || i, 'single', 'done' FROM n;"
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500)"
        " INSERT INTO ticket_events (ticket_id, old_status, new_status)"
        " SELECT 7, 'open', 'done' FROM n;",
    )
    runs = list(range(1, 501))
    shown = swarm_inproc(home, "ticket", "show", "7", "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert [r["id"] for r in detail["runs"]] == runs[-SHOWN_RUNS:]
    assert (detail["runs_total"], detail["runs_before"]) == (500, runs[-SHOWN_RUNS])
    assert len(detail["events"]) == SHOWN_EVENTS and detail["events_total"] == 1501
    assert f"--before {runs[-SHOWN_RUNS]}" in shown.stderr
    text = swarm_inproc(home, "ticket", "show", "7").stdout
    assert text.count("run ") >= SHOWN_RUNS and "run 480 " not in text
    assert "20 of 500 runs shown" in text and "--before 481" in text
    older = json.loads(
        swarm_inproc(
            home, "ticket", "show", "7", "--json", "--before", "481", "--runs", "1000"
        ).stdout
    )
    assert [r["id"] for r in older["runs"]] == runs[:480] and older["runs_before"] is None
    server = start_api(home)
    try:
        got = server.get("/v1/tickets/7").json()
        assert len(got["runs"]) == SHOWN_RUNS and got["runs_total"] == 500
        assert got["runs_before"] == 481 and len(got["events"]) == SHOWN_EVENTS
        paged: list[int] = []
        before: str | None = str(got["runs_before"])
        while before is not None:
            page = server.get(f"/v1/tickets/7/runs?limit=200&before={before}")
            assert page.status_code == 200 and page.headers["X-Total-Count"] == "500"
            paged = [r["id"] for r in page.json()] + paged
            before = page.headers.get("X-Before")
        assert paged == runs[:480]
        events = server.get("/v1/tickets/7/events")
        assert len(events.json()) == 1000 and events.headers["X-Total-Count"] == "1501"
        assert server.get("/v1/tickets/7/runs?limit=1001").status_code == 422
        page = server.get("/ui/tickets/7")
        assert page.status_code == 200 and "480 older runs not shown" in page.text
        assert page.text.count("<h2>Run ") == SHOWN_RUNS
    finally:
        server.stop()


def test_ticket_list_status_may_be_repeated_like_the_api_status_param(home: Path) -> None:
    """`--status failed --status cancelled` lists the tickets in either status (it kept only
    the last one), as `GET /v1/tickets?status=failed&status=cancelled` does, and the line
    for the next page repeats every one of them."""
    for tid, status in enumerate(("done", "failed", "open", "cancelled", "failed"), start=1):
        sql(home, "INSERT INTO tickets (id, title, status, agent_id) VALUES (?, ?, ?, 'echo')",
            tid, f"t{tid}", status)  # fmt: skip
    args = ("ticket", "list", "--status", "failed", "--status", "cancelled")
    done = swarm_inproc(home, *args, "--json")
    assert (done.returncode, done.stderr) == (0, "")
    assert [(t["id"], t["status"]) for t in json.loads(done.stdout)] == [
        (5, "failed"),
        (4, "cancelled"),
        (2, "failed"),
    ]
    paged = swarm_inproc(home, *args, "--limit", "2")
    assert paged.returncode == 0, paged.stderr
    assert (
        "swarm-engine ticket list --status failed --status cancelled --limit 2 --cursor 4"
        in paged.stdout
    )
    rest = swarm_inproc(home, *args, "--limit", "2", "--cursor", "4", "--json")
    assert [t["id"] for t in json.loads(rest.stdout)] == [2]
    none = swarm_inproc(home, "ticket", "list", "--status", "draft", "--status", "running")
    assert none.stdout.startswith("no tickets with status draft or running ")
    for cursor in ("1", "-9223372036854775808"):  # past the last page: not an empty store
        end = swarm_inproc(home, *args, "--cursor", cursor)
        assert end.returncode == 0, end.stderr
        assert end.stdout == (
            f"no more tickets with status failed or cancelled below id {cursor}"
            " (the end of the list)\n"
        ), end.stdout
    bad = swarm_inproc(home, "ticket", "list", "--status", "done", "--status", "bogus")
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr.startswith("error: unknown status 'bogus' ")
    server = start_api(home)
    try:
        got = server.get("/v1/tickets?status=failed&status=cancelled").json()
        assert [t["id"] for t in got["items"]] == [5, 4, 2]
    finally:
        server.stop()


def test_ticket_show_cuts_a_huge_field_and_json_keeps_it_whole(home: Path) -> None:
    """`ticket show` prints at most 256 Ki characters of a field, then how many more
    there are (Rich folding a 60 MB line took minutes); `--json` has all of it."""
    swarm(home, "ticket", "list", check=True)  # the store is made
    doc = "".join(f"{i:07d}," for i in range(400_000))  # 3.2 MB
    with sqlite3.connect(home / "tickets.db") as db:
        db.execute("INSERT INTO tickets (title, status, agent_id, inputs) VALUES"
                   " ('big', 'open', 'echo', ?)", (json.dumps({"doc": doc}),))  # fmt: skip
    shown = swarm(home, "ticket", "show", "1", check=True, COLUMNS="100").stdout
    assert "more characters: --json shows all of it" in shown
    assert len(shown) < 600_000 and "0000000," in shown and "0399999," not in shown
    whole = json.loads(swarm(home, "ticket", "show", "1", "--json", check=True).stdout)
    assert whole["inputs"] == {"doc": doc}


def test_human_views_cut_long_names_and_show_a_runs_newest_steps(home: Path) -> None:
    """A title, an agent or a step id of any size is shown as its first `NAME_CHARS` and
    its length (a 200,000-character step id in `logs`' header rule had taken minutes), and
    `ticket show` prints a run's newest `SHOWN_STEPS` steps and how many it left out;
    `--json` keeps every value whole (and the same newest steps), but a title over its
    64 KiB, which the store hands over as its first 200 characters and its size, and a
    step id over 1 KiB (`MAX_NAME_BYTES`), which it hands over as null with its size."""
    # (an agent name over 1 KiB is read as null: test_big_row_names.py)
    title, agent, step = "T" * 3_000_000, "a" * 1_000, "s" * 200_000
    sql(
        home,
        "INSERT INTO tickets (id, title, status, agent_id) VALUES (1, ?, 'done', ?)",
        title,
        agent,
    )
    steps = SHOWN_STEPS + 50
    sql(
        home,
        "INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, execution_mode, status)"
        " VALUES (1, 1, 'a1', 'single', 'done');"
        f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {steps})"
        " INSERT INTO step_executions (run_id, step_id, agent_name, agent_version, agent_kind,"
        " status) SELECT 1, 'step' || i, 'echo', '1', 'echo', 'done' FROM n;",
    )
    sql(home, "UPDATE step_executions SET step_id = ? WHERE id = ?", step, steps)
    started = time.monotonic()
    show = swarm_inproc(home, "ticket", "show", "1")
    logs = swarm_inproc(home, "logs", "1")
    listed = swarm_inproc(home, "ticket", "list")
    status = swarm_inproc(home, "status")
    assert time.monotonic() - started < 15  # (each well under a second here)
    for done in (show, logs, listed, status):
        assert done.returncode == 0, done.stderr
        assert len(done.stdout) < 100_000
    shown = "".join(show.stdout.split())  # (Rich wraps a line past the width)
    assert "T" * NAME_CHARS in shown and "title:3,000,000bytesoftext" in shown
    assert "a" * NAME_CHARS + "…(1,000characters)" in shown
    assert f"{SHOWN_STEPS} of {steps} steps shown (the newest); 50 older" in show.stdout
    assert "step51 " in show.stdout and "step50 " not in show.stdout
    assert logs.stdout.count(" · step ") == steps and "s" * (NAME_CHARS + 1) not in logs.stdout
    assert "T" * (NAME_CHARS + 1) not in listed.stdout
    whole = json.loads(swarm_inproc(home, "ticket", "show", "1", "--json").stdout)
    assert (whole["title"], whole["agent_id"]) == (title[:200], agent)
    assert any(d.startswith("title: 3,000,000 bytes of text") for d in whole["defects"])
    run = whole["runs"][0]  # --json too: the newest SHOWN_STEPS, and how to page on
    assert len(run["steps"]) == SHOWN_STEPS and run["steps"][-1]["step_id"] is None
    assert run["steps"][-1]["defects"] == [
        f"step_id: {len(step):,} bytes of text, more than the 1 KiB it may hold (not read)"
    ]
    assert (run["steps_total"], run["steps_before"]) == (steps, 51)


def each(target: Target, n: int, insert: str) -> str:
    """`insert` (an `INSERT ... SELECT` of `i`) once for each `i` from 1 to `n`."""
    if target.dialect == "sqlite":
        rows = f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})"
        return f"{rows} {insert} FROM n"
    return f"{insert} FROM generate_series(1, {n}) AS i"


def test_views_bound_the_errors_of_runs_and_steps_too(store_target: Target, tmp_path: Path) -> None:
    """A run's and a step's `error` (up to 64 KiB each, whole) is in a view's
    `VIEW_VALUES_BYTES` with their values: 10 runs of 100 steps with 64 KiB errors made a
    131 MB `GET /v1/tickets/ID`. The newest run's and step's error is whole; the older
    ones past the budget are null, named in `left_out`, and a page of one gives them."""
    home, error, runs = tmp_path / "home", MAX_ERROR_BYTES, 300  # 18.75 MiB of run errors
    assert swarm_inproc(home, "status", "--init", **store_target.env).returncode == 0
    x = text(store_target, error)
    store_target.sql(
        "INSERT INTO tickets (id, title, status, agent_id) VALUES (1, 't', 'failed', 'echo')"
    )
    store_target.sql(
        each(
            store_target,
            runs,
            "INSERT INTO workflow_runs (id, ticket_id, attempt, attempt_id, execution_mode,"
            f" status, error) SELECT i, 1, i, 'a-' || i, 'single', 'failed', {x}",
        )
    )
    steps = 10 * SHOWN_STEPS  # the newest 10 runs' (62.5 MiB of step errors)
    store_target.sql(
        each(
            store_target,
            steps,
            "INSERT INTO step_executions (id, run_id, step_id, agent_name, agent_version,"
            f" agent_kind, status, error) SELECT i, {runs - 9} + (i - 1) / {SHOWN_STEPS},"
            f" 's' || i, 'echo', '1', 'echo', 'failed', {x}",
        )
    )
    bound = views.VIEW_VALUES_BYTES + 4 * 1024 * 1024  # (runs' errors, the rest of each row)
    api = start_api(home, **store_target.env)
    try:
        got = api.get("/v1/tickets/1")
        assert got.status_code == 200 and len(got.content) < bound
        detail = got.json()
        newest = detail["runs"][-1]
        assert len(newest["error"]) == error and len(newest["steps"][-1]["error"]) == error
        shown = [s for r in detail["runs"] for s in r.get("steps", [])]
        left = [s for s in shown if s["left_out"]]
        assert left and all("error" in s["left_out"] and s["error"] is None for s in left)
        assert sum(len(s["error"] or "") for s in shown) <= views.VIEW_VALUES_BYTES
        oldest = left[0]  # a page of one gives a left out error whole
        page = api.get(f"/v1/runs/{oldest['run_id']}/steps?before={oldest['id'] + 1}&limit=1")
        assert len(page.json()[0]["error"]) == error and not page.json()[0]["left_out"]
        many = api.get("/v1/tickets/1/runs?limit=1000")
        assert many.status_code == 200 and len(many.content) < 2 * bound
        every = many.json()
        assert len(every) == runs and len(every[-1]["error"]) == error
        gone = [r for r in every if r["left_out"]]
        assert gone and all("error" in r["left_out"] and r["error"] is None for r in gone)
        assert sum(len(r["error"] or "") for r in every) <= views.VIEW_VALUES_BYTES
        assert len(api.get(f"/v1/runs/{gone[0]['id']}").json()["error"]) == error
        ui = api.get("/ui/tickets/1")
        assert ui.status_code == 200 and len(ui.content) < bound
        assert "left out here; whole: <code>GET /v1/runs/" in ui.text
    finally:
        api.stop()
    out = swarm_inproc(home, "ticket", "show", "1", "--json", **store_target.env)
    assert out.returncode == 0 and len(out.stdout) < bound, out.stderr
    table = swarm_inproc(home, "ticket", "show", "1", **store_target.env, COLUMNS="400")
    assert table.returncode == 0, table.stderr
    assert (
        f"(error left out here; whole: swarm-engine ticket steps 1 --run {runs - 9}" in table.stdout
    )
