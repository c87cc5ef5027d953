"""Registry, VM, engine, run, step and event rows as any client may write them, with a
column over its cap:
a definition's `spec` over 8 MiB (`MAX_SPEC_BYTES`), a name (an id, a host, a version...)
over 1 KiB (`MAX_NAME_BYTES`), a VM's path over 4 KiB (`MAX_PATH_BYTES`). The store's
reads measure each in SQL and hand over null (a description or an error: its first 200
characters) with a defect line: nothing copies the value, a definition fails with one
line, and the lists, `status`, the API and `cleanup` go on (these tables were read with
`SELECT *`: one 100 MB cell made every read of its table 100 MB, some every heartbeat)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tests.conftest import Target
from tests.support.api import start_api
from tests.support.cli import sqlite_shell, swarm_inproc

from swarm_engine.engine.reaper import cleanup
from swarm_engine.errors import ConfigError
from swarm_engine.records import (
    MAX_DESCRIPTION_BYTES,
    MAX_ERROR_BYTES,
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    MAX_SPEC_BYTES,
)
from swarm_engine.registry.catalog import Registry
from swarm_engine.store import open_store

TOKEN = "a-token-for-the-big-row-names"
SMALL = 64 * 1024
"""What every view of these rows stays under."""
SPEC_OVER = re.compile(
    r"[\d,]+ bytes of JSON, more than the 8 MiB a definition may hold \(not read\)"
)


def text(target: Target, n: int, char: str = "x") -> str:
    """SQL for `n` times `char`, made by the server (no statement of megabytes)."""
    if target.dialect == "sqlite":
        return f"replace(hex(zeroblob({n})), '00', '{char}')"
    return f"repeat('{char}', {n})"


def name_over(n: int = MAX_NAME_BYTES + 1) -> str:
    return f"{n:,} bytes of text, more than the 1 KiB it may hold (not read)"


def registry_sql(target: Target, home: Path, statement: str) -> None:
    """Write to the registry as another client would (PostgreSQL: the same database)."""
    if target.dialect == "sqlite":
        sqlite_shell(home / "registry.db", statement)
    else:
        target.sql(statement)


def big_spec(target: Target, **fields: str) -> str:
    """SQL for a definition's spec of more than `MAX_SPEC_BYTES` of JSON."""
    build = "json_object" if target.dialect == "sqlite" else "jsonb_build_object"
    pairs = ", ".join(f"'{k}', '{v}'" for k, v in fields.items())
    return f"{build}({pairs}, 'description', {text(target, MAX_SPEC_BYTES + 1000)})"


def test_registry_values_over_their_caps_are_not_read(store_target: Target, tmp_path: Path) -> None:
    home, env = tmp_path / "home", store_target.env
    assert swarm_inproc(home, "status", "--init", **env).returncode == 0
    assert swarm_inproc(home, "agent", "list", **env).returncode == 0  # (the registry made)
    agent = {"version": "1.0.0", "kind": "shell", "command": "true"}
    registry_sql(
        store_target, home,
        "INSERT INTO agents (name, version, kind, spec) VALUES"
        f" ('big', '1.0.0', 'shell', {big_spec(store_target, name='big', **agent)})",
    )  # fmt: skip
    fits = json.dumps({"name": "long", **agent})
    registry_sql(
        store_target, home,
        "INSERT INTO agents (name, version, kind, description, spec) VALUES ('long', '1.0.0',"
        f" 'shell', {text(store_target, MAX_DESCRIPTION_BYTES + 1)}, '{fits}')",
    )  # fmt: skip
    registry_sql(
        store_target, home,
        "INSERT INTO agents (name, version, kind, spec) VALUES"
        f" ({text(store_target, MAX_NAME_BYTES + 1, 'n')}, '1.0.0', 'shell', '{{}}')",
    )  # fmt: skip
    registry_sql(
        store_target, home,
        "INSERT INTO workflows (name, version, spec) VALUES ('bigwf', '1.0.0',"
        f" {big_spec(store_target, name='bigwf', version='1.0.0')})",
    )  # fmt: skip
    store_target.sql(
        "INSERT INTO tickets (title, status, agent_id, inputs) VALUES ('t', 'open', 'big', '{}')"
    )

    ran = swarm_inproc(home, "run-ticket", "1", "--wait", **env)  # fails before its claim
    assert ran.returncode == 5, ran.stdout + ran.stderr
    line = "error: agent big@1.0.0 in the registry: spec is "
    assert ran.stderr.startswith(line) and ran.stderr.count("\n") == 1, ran.stderr
    assert SPEC_OVER.match(ran.stderr.removeprefix(line)), ran.stderr

    listed = swarm_inproc(home, "agent", "list", "--json", **env)
    assert listed.returncode == 0 and len(listed.stdout) < SMALL, listed.stderr
    rows = json.loads(listed.stdout)
    big = next(a for a in rows if a["name"] == "big")
    assert big["spec"] is None and len(big["defects"]) == 1, big
    assert SPEC_OVER.fullmatch(big["defects"][0].removeprefix("spec: "))
    long = next(a for a in rows if a["name"] == "long")
    assert long["description"] == "x" * 200 and long["spec"]["command"] == "true"
    assert long["defects"] == [
        f"description: {MAX_DESCRIPTION_BYTES + 1:,} bytes of text, more than the 1 MiB it may hold"
    ]
    (nameless,) = [a for a in rows if a["name"] is None]
    assert nameless["defects"] == [f"name: {name_over()}"]
    assert not any(key.endswith("_bytes") for row in rows for key in row)
    assert swarm_inproc(home, "agent", "list", **env).returncode == 0

    workflows = swarm_inproc(home, "workflow", "list", "--json", **env)
    assert workflows.returncode == 0 and len(workflows.stdout) < SMALL, workflows.stderr
    (wf,) = json.loads(workflows.stdout)
    assert wf["spec"] is None and SPEC_OVER.fullmatch(wf["defects"][0].removeprefix("spec: "))

    target = home / "registry.db" if store_target.dialect == "sqlite" else store_target.target
    registry = Registry(target, home / "packages")
    try:
        skipped: list[str] = []
        assert registry.latest_workflows(skipped) == []
        (why,) = skipped
        assert why.startswith("workflow bigwf@1.0.0 in the registry: spec is "), why
        with pytest.raises(ConfigError, match=r"^workflow bigwf@1\.0\.0 in the registry: spec"):
            registry.workflow("bigwf")
    finally:
        registry.close()

    api = start_api(home, token=TOKEN, **env)
    try:
        got = api.get("/v1/agents")
        assert got.status_code == 200 and len(got.content) < SMALL
        assert {a["name"]: a["spec"] for a in got.json()}["big"] is None
    finally:
        api.stop()


def test_vm_and_engine_names_and_paths_over_their_caps_are_read_as_null(
    store_target: Target, tmp_path: Path
) -> None:
    """A VM's paths over 4 KiB are null, never cut (`victim////...` cut is `victim`): the
    reaper hands its backend no path and deletes nothing; names over 1 KiB are null with a
    defect; an engine whose id is not read is shown and left as it is."""
    home, env = tmp_path / "home", store_target.env
    assert swarm_inproc(home, "status", "--init", **env).returncode == 0
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("kept")
    path = f"'{victim}' || {text(store_target, MAX_PATH_BYTES, '/')}"
    store_target.sql(
        "INSERT INTO engines (id, kind, host, pid, max_vms, backend, state) VALUES"
        " ('gone', 'daemon', 'here', 999999999, 1, 'process', 'dead'),"
        f" ({text(store_target, MAX_NAME_BYTES + 1, 'e')}, 'daemon',"
        f" {text(store_target, 5000, 'h')}, 999999999, 1, 'process', 'running')"
    )
    store_target.sql(
        "INSERT INTO vms (id, backend, host, engine_id, owner_pid, state, workspace,"
        " socket_path, overlay_path, error, isolation) VALUES ('vm-1', 'process', 'here',"
        f" 'gone', 999999999, 'ready', {path}, {path}, {path},"
        f" {text(store_target, MAX_ERROR_BYTES + 1)}, {text(store_target, 2000)}),"
        f" ({text(store_target, 2000, 'v')}, 'process', 'here', 'gone', 999999999, 'ready',"
        " NULL, NULL, NULL, NULL, NULL)"
    )
    path_over = f"{len(str(victim)) + MAX_PATH_BYTES:,} bytes of text, more than the 4 KiB"
    store = open_store(store_target.target)
    try:
        vm = store.vms.get("vm-1")
        assert vm is not None
        assert vm["workspace"] is None and vm["socket_path"] is None
        assert vm["overlay_path"] is None and vm["isolation"] is None
        assert vm["error"] == "x" * 200
        assert [d.split(":")[0] for d in vm["defects"]] == [
            "workspace", "socket_path", "overlay_path", "error", "isolation"
        ]  # fmt: skip
        assert vm["defects"][0] == f"workspace: {path_over} it may hold (not read)"
        assert vm["defects"][4] == f"isolation: {name_over(2000)}"
        assert not any(key.endswith("_bytes") for key in vm)
        store_target.sql(
            "INSERT INTO tickets (title, status, agent_id, inputs) VALUES ('t', 'done', 'echo',"
            " '{}'); INSERT INTO workflow_runs (ticket_id, attempt, attempt_id,"
            " execution_mode, status) VALUES (1, 1, 'a-1', 'single', 'done');"
            " INSERT INTO step_executions (run_id, step_id, agent_name, agent_version,"
            " agent_kind, vm_id, status) VALUES (1, 'only', 'echo', '1', 'echo', 'vm-1', 'done')"
        )
        (step,) = store.runs.steps(1)  # what isolated its VM: not read either
        assert step["vm_backend"] == "process" and step["vm_isolation"] is None
        live = store.vms.live("here")
        assert [v["id"] for v in live] == ["vm-1", None]
        assert live[1]["defects"] == [f"id: {name_over(2000)}"]
        (engine,) = store.engines.running()
        assert engine["id"] is None and engine["host"] is None and engine["kind"] == "daemon"
        assert engine["defects"] == [f"id: {name_over()}", f"host: {name_over(5000)}"]
        assert store.engines.gone() == {"gone"}
        assert store.engines.heartbeating(60) == set()
        assert sorted(map(str, (h["host"] for h in store.engines.hosts()))) == ["None", "here"]

        report = cleanup(store, home, "here")  # `gone` is dead: its VMs are reaped
        assert report.vms == ["vm-1"] and report.engines == [], report
        assert (victim / "keep").read_text() == "kept"
        assert store.vms.get("vm-1")["state"] in ("destroyed", "failed")  # type: ignore[index]
        (left,) = store.vms.live("here")  # the VM whose id is not read: left as it is
        assert left["id"] is None and left["state"] == "ready"
        assert store.engines.forget_silent(0) == []  # nor an engine whose id is not read
        (engine,) = store.engines.running()
        assert engine["defects"][0] == f"id: {name_over()}"
    finally:
        store.close()

    status = swarm_inproc(home, "status", "--json", **env)
    assert status.returncode == 0 and len(status.stdout) < SMALL, status.stderr
    data = json.loads(status.stdout)
    assert [e["id"] for e in data["engines"]] == [None]
    assert swarm_inproc(home, "status", **env).returncode == 0

    api = start_api(home, token=TOKEN, **env)
    try:
        for route in ("/v1/vms", "/v1/hosts", "/v1/engines", "/v1/status"):
            got = api.get(route)
            assert got.status_code == 200 and len(got.content) < SMALL, route
        hosts = {str(h["host"]): h for h in api.get("/v1/hosts").json()}
        assert hosts["None"]["defects"] == [f"host: {name_over(5000)}"], hosts
    finally:
        api.stop()


MB = 1024 * 1024


def test_run_step_and_event_names_over_their_caps_are_read_as_null(
    store_target: Target, tmp_path: Path
) -> None:
    """A run's, a step's and a status event's names of 1 MB (`attempt_id`, `engine_id`,
    `workflow_name`, `step_id`, `agent_name`, `log_path`, `new_status`...) are read as
    null with a defect each, never cut: a ticket's detail (`GET /v1/tickets/ID`, `ticket
    show --json`) and `status --json` stay small (they were read whole: 100 events with
    a 1 MB `engine_id` made a 50 MB answer)."""
    home, env = tmp_path / "home", store_target.env
    assert swarm_inproc(home, "status", "--init", **env).returncode == 0

    def big(char: str, n: int = MB) -> str:
        return text(store_target, n, char)

    # a name PostgreSQL indexes (a key, a workflow's name, an engine's or a VM's id) holds at
    # most about 2 KiB compressed there: 100,000 bytes of one character
    keyed = MB if store_target.dialect == "sqlite" else 100_000

    events = 10
    store_target.sql(
        "INSERT INTO engines (id, kind, host, pid, max_vms, backend, state) VALUES"
        f" ({big('e', keyed)}, 'daemon', 'here', 999999999, 1, 'process', 'dead');"
        " INSERT INTO vms (id, backend, host, owner_pid, state) VALUES"
        f" ({big('m', keyed)}, 'process', 'here', 999999999, 'destroyed');"
        " INSERT INTO tickets (title, status, agent_id, inputs) VALUES ('t', 'done', 'echo',"
        " '{}'); INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, engine_id,"
        " execution_mode, workflow_name, workflow_version, status) VALUES (1, 1,"
        f" {big('a', keyed)}, {big('e', keyed)}, 'workflow', {big('w', keyed)}, {big('v')}, 'done');"
        " INSERT INTO step_executions (run_id, step_id, agent_name, agent_version,"
        f" agent_kind, vm_id, status, log_path) VALUES (1, {big('s')}, {big('n')},"
        f" {big('v')}, {big('k')}, {big('m', keyed)}, 'done', {big('/')});"
        + "".join(
            " INSERT INTO ticket_events (ticket_id, old_status, new_status, engine_id,"
            f" attempt_id) VALUES (1, {big('o')}, {big('n')}, {big('e')}, {big('a')});"
            for _ in range(events)
        )
    )
    over, key_over = name_over(MB), name_over(keyed)
    path_over = f"{MB:,} bytes of text, more than the 4 KiB it may hold (not read)"
    run_names = ("attempt_id", "engine_id", "workflow_name", "workflow_version")
    step_names = ("step_id", "agent_name", "agent_version", "agent_kind", "vm_id")
    event_names = ("old_status", "new_status", "engine_id", "attempt_id")

    def check(detail: dict[str, object]) -> None:
        (run,) = detail["runs"]  # type: ignore[misc]
        assert all(run[name] is None for name in run_names), run
        assert run["defects"] == [
            f"attempt_id: {key_over}", f"engine_id: {key_over}",
            f"workflow_name: {key_over}", f"workflow_version: {over}",
        ]  # fmt: skip
        assert run["status"] == "done" and run["execution_mode"] == "workflow"
        (step,) = run["steps"]
        assert all(step[name] is None for name in (*step_names, "log_path")), step
        assert step["defects"] == [
            *(f"{name}: {over}" for name in step_names[:-1]),
            f"vm_id: {key_over}", f"log_path: {path_over}",
        ]  # fmt: skip
        assert step["status"] == "done"
        written = [e for e in detail["events"] if e.get("defects")]  # type: ignore[attr-defined]
        assert len(written) == events
        for event in written:
            assert all(event[name] is None for name in event_names), event
            assert event["defects"] == [f"{name}: {over}" for name in event_names]

    api = start_api(home, token=TOKEN, **env)
    try:
        got = api.get("/v1/tickets/1")
        assert got.status_code == 200 and len(got.content) < SMALL, len(got.content)
        check(got.json())
        for route in ("/v1/tickets/1/events", "/v1/runs/1/steps", "/v1/status"):
            got = api.get(route)
            assert got.status_code == 200 and len(got.content) < SMALL, route
    finally:
        api.stop()

    shown = swarm_inproc(home, "ticket", "show", "1", "--json", **env)
    assert shown.returncode == 0 and len(shown.stdout) < SMALL, len(shown.stdout)
    data = json.loads(shown.stdout)
    check(data)
    assert not any(key.endswith("_bytes") for key in data["runs"][0])
    assert swarm_inproc(home, "ticket", "show", "1", **env).returncode == 0

    status = swarm_inproc(home, "status", "--json", **env)
    assert status.returncode == 0 and len(status.stdout) < SMALL, len(status.stdout)
    assert swarm_inproc(home, "status", **env).returncode == 0
    logs = swarm_inproc(home, "logs", "1", **env)
    assert logs.returncode == 0 and len(logs.stdout) < SMALL, logs.stderr


def test_ticket_names_over_their_caps_are_read_as_null(
    store_target: Target, tmp_path: Path
) -> None:
    """A ticket's `agent_id` or `workflow_id` of 1 MB fails that ticket alone, with a line
    giving its size, and a `engine_id` or `attempt_id` of 1 MB is shown as null with a
    defect: every view stays small (they were read whole: a 200 MB `agent_id` made `ticket
    list --limit 5` take 611 MB and the engine 2 GB; tester h-221)."""
    home, env = tmp_path / "home", store_target.env
    assert swarm_inproc(home, "status", "--init", **env).returncode == 0
    keyed = MB if store_target.dialect == "sqlite" else 100_000  # (see above: indexed)
    store_target.sql(
        "INSERT INTO tickets (title, status, agent_id, inputs) VALUES"
        f" ('agent', 'open', {text(store_target, keyed, 'a')}, '{{}}');"
        " INSERT INTO tickets (title, status, execution_mode, workflow_id, inputs) VALUES"
        f" ('workflow', 'open', 'workflow', {text(store_target, keyed, 'w')}, '{{}}');"
        " INSERT INTO tickets (title, status, agent_id, inputs, engine_id, attempt_id) VALUES"
        f" ('done', 'done', 'echo', '{{}}', {text(store_target, MB, 'e')},"
        f" {text(store_target, MB, 'x')});"
        " INSERT INTO tickets (title, status, agent_id, inputs) VALUES ('good', 'open', 'echo', '{}')"
    )
    ran = swarm_inproc(home, "start", "--foreground", "--until-idle", **env)
    assert ran.returncode == 0, ran.stderr
    rows = store_target.rows("SELECT title, status, error FROM tickets ORDER BY id")
    assert [r["status"] for r in rows] == ["failed", "failed", "done", "done"], rows
    for row, name in zip(rows, ("agent_id", "workflow_id"), strict=False):
        assert row["error"] == f"ticket {rows.index(row) + 1} row is malformed: {name}: " + (
            name_over(keyed)
        )

    listed = swarm_inproc(home, "ticket", "list", "--json", **env)
    assert listed.returncode == 0 and len(listed.stdout) < SMALL, len(listed.stdout)
    shown = {t["title"]: t for t in json.loads(listed.stdout)}
    assert shown["agent"]["agent_id"] is None and shown["workflow"]["workflow_id"] is None
    assert shown["done"]["engine_id"] is None and shown["done"]["attempt_id"] is None
    assert shown["done"]["defects"] == [
        f"engine_id: {name_over(MB)}",
        f"attempt_id: {name_over(MB)}",
    ]
    for ticket_id in ("1", "3"):
        one = swarm_inproc(home, "ticket", "show", ticket_id, "--json", **env)
        assert one.returncode == 0 and len(one.stdout) < SMALL, len(one.stdout)
    assert swarm_inproc(home, "ticket", "list", **env).returncode == 0
    api = start_api(home, token=TOKEN, **env)
    try:
        got = api.get("/v1/tickets")
        assert got.status_code == 200 and len(got.content) < SMALL, len(got.content)
    finally:
        api.stop()
