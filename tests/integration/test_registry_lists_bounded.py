"""Lists of the registry's definitions stay bounded whatever its rows hold: `GET
/v1/agents`, `GET /v1/workflows` and `agent list` / `workflow list` are keyset pages
(`limit`, a cursor), their specs within `LIST_BYTES` a page, measured in SQL before any is
read (40 workflows of 1.4 MB made one list 50 MB, and 4 of them at once took the server
from 340 MB to 2.4 GB); the tables read no spec at all. A definition is at most 1 MiB
(`MAX_DEFINITION_BYTES`) however it comes in: a 1.4 MB body was accepted by the API while
the same file was refused by `workflow register`."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest
from tests.conftest import Target
from tests.integration.test_big_row_names import registry_sql, text
from tests.support.api import Api, start_api
from tests.support.cli import swarm_inproc

from swarm_engine.records import MAX_DEFINITION_BYTES, MAX_NAME_BYTES
from swarm_engine.registry.builtins import BUILTIN_VERSIONS
from swarm_engine.registry.listing import LIST_BYTES

TOKEN = "a-token-for-the-registry-lists"
BIG = 3 * 1024 * 1024
"""Bytes of each hand-written definition's spec: 12 of them are 36 MiB a table."""
COUNT = 12
PAGE_MOST = LIST_BYTES + BIG + 64 * 1024
"""What one page may take: `LIST_BYTES`, and a first definition of its own."""


def spec_sql(target: Target, **fields: str) -> str:
    """SQL for a spec of `BIG` bytes of JSON with `fields` and 3 steps, made by the server."""
    build, array = (
        ("json_object", "json_array") if target.dialect == "sqlite" else
        ("jsonb_build_object", "jsonb_build_array")
    )  # fmt: skip
    pairs = ", ".join(f"'{k}', '{v}'" for k, v in fields.items())
    steps = f"{array}({build}('id', 'a'), {build}('id', 'b'), {build}('id', 'c'))"
    return f"{build}({pairs}, 'steps', {steps}, 'notes', {text(target, BIG)})"


def write_rows(target: Target, home: Path) -> None:
    """COUNT big workflows and agents, and one of each whose name no key can hold, as an
    outside writer would (SQL)."""
    for i in range(COUNT):
        registry_sql(
            target, home,
            "INSERT INTO workflows (name, version, description, spec) VALUES"
            f" ('wf{i:02}', '1.0.0', 'workflow {i}', {spec_sql(target, name=f'wf{i:02}')})",
        )  # fmt: skip
        registry_sql(
            target, home,
            "INSERT INTO agents (name, version, kind, spec) VALUES"
            f" ('ag{i:02}', '1.0.0', 'shell', {spec_sql(target, name=f'ag{i:02}')})",
        )  # fmt: skip
    for table, kind in (("workflows", ""), ("agents", "'shell', ")):
        registry_sql(
            target, home,
            f"INSERT INTO {table} (name, version, {'kind, ' if kind else ''}spec) VALUES"
            f" ({text(target, MAX_NAME_BYTES + 1, 'n')}, '1.0.0', {kind}'{{}}')",
        )  # fmt: skip
    if target.dialect == "sqlite":  # a name that is not text: listed, never a key; text
        # that is not UTF-8: a key passed on exactly (read as `z\ufffd`, two of them)
        registry_sql(
            target, home,
            "INSERT INTO workflows (name, version, spec) VALUES (X'ff41', '1', '{}'),"
            " (CAST(X'7aff' AS TEXT), '1', '{}'), (CAST(X'7aff' AS TEXT), '2', '{}')",
        )  # fmt: skip


def api_pages(api: Api, path: str, limit: int | None = None) -> list[list[dict[str, object]]]:
    pages: list[list[dict[str, object]]] = []
    cursor: str | None = None
    for _ in range(200):
        params = {k: v for k, v in (("limit", limit), ("cursor", cursor)) if v is not None}
        got = api.get(path, params=params)
        assert got.status_code == 200, got.text
        assert len(got.content) <= PAGE_MOST, (path, len(pages), len(got.content))
        pages.append(got.json())
        cursor = got.headers.get("X-Next-Cursor")
        if cursor is None:
            return pages
    raise AssertionError(f"{path}: no last page after 200")


def names(pages: list[list[dict[str, object]]]) -> list[object]:
    return [d["name"] for page in pages for d in page]


def test_lists_page_through_big_definitions_within_their_budget(
    store_target: Target, tmp_path: Path
) -> None:
    home, env = tmp_path / "home", store_target.env
    assert swarm_inproc(home, "status", "--init", **env).returncode == 0
    assert swarm_inproc(home, "agent", "list", **env).returncode == 0  # (the registry made)
    write_rows(store_target, home)
    odd = 2 if store_target.dialect == "sqlite" else 1  # the rows no key can name
    wanted = [f"wf{i:02}" for i in range(COUNT)]
    wanted += ["z\ufffd"] * 2 if store_target.dialect == "sqlite" else []

    api = start_api(home, token=TOKEN, **env)
    try:
        pages = api_pages(api, "/v1/workflows")
        assert len(pages) > 2  # 36 MiB of specs: ended early by bytes, not by the limit
        listed = names(pages)
        assert listed[: len(wanted)] == wanted, listed  # each once, in order
        assert len(listed) == len(wanted) + odd, listed[len(wanted) :]
        assert all(d["name"] is None or d["defects"] for d in pages[-1][-odd:])
        whole = [d for page in pages for d in page if str(d["name"]).startswith("wf")]
        assert all(len(json.dumps(d["spec"])) > BIG for d in whole)  # every one listed whole

        small = api_pages(api, "/v1/workflows", limit=5)  # the limit ends pages too
        assert names(small) == listed and all(len(p) <= 5 for p in small)

        agents = names(api_pages(api, "/v1/agents"))
        mine = [f"ag{i:02}" for i in range(COUNT)]
        assert [a for a in agents if a in mine] == mine and set(BUILTIN_VERSIONS) <= set(agents)
        assert len(agents) == COUNT + len(BUILTIN_VERSIONS) + 1 and agents[-1] is None

        for bad in ("xyz", "W10", "eyJrIjoxfQ", "x" * 13000):
            got = api.get("/v1/workflows", params={"cursor": bad})
            assert got.status_code in (400, 422) and "cursor" in got.text, (bad, got.text)
        for limit in (0, 1001):
            assert api.get("/v1/agents", params={"limit": limit}).status_code == 422
    finally:
        api.stop()

    swarm_inproc(home, "workflow", "list", **env)  # (imports made before measuring)
    tracemalloc.start()
    try:
        table = swarm_inproc(home, "workflow", "list", **env)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert table.returncode == 0, table.stderr
    assert peak < BIG, f"workflow list took {peak:,} bytes: it read specs"
    for name in wanted[:COUNT]:  # every one, with its steps counted in SQL
        assert any(line.split()[:3] == [name, "1.0.0", "3"] for line in table.stdout.splitlines())
    assert "more" not in table.stdout
    agents_table = swarm_inproc(home, "agent", "list", **env)
    assert agents_table.returncode == 0 and len(agents_table.stdout) < 64 * 1024

    seen: list[object] = []
    args = ["workflow", "list", "--json"]
    for _ in range(50):
        page = swarm_inproc(home, *args, **env)
        assert page.returncode == 0 and len(page.stdout) <= PAGE_MOST, page.stderr
        seen += [d["name"] for d in json.loads(page.stdout)]
        if not page.stderr.strip():
            break
        assert "this page ended early" in page.stderr, page.stderr
        args = page.stderr.split("swarm-engine ", 1)[1].split()
    assert seen == listed


@pytest.mark.parametrize("route", ["/v1/workflows", "/v1/agents"])
def test_a_definition_over_1_mib_is_refused_by_the_api_as_by_a_file(
    route: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    base = (
        {"name": "big", "version": "1.0.0", "steps": [{"id": "a", "agent": "echo"}]}
        if route == "/v1/workflows"
        else {"name": "big", "version": "1.0.0", "kind": "shell", "command": "true"}
    )
    pad = MAX_DEFINITION_BYTES - len(json.dumps({**base, "description": ""}))
    api = start_api(home, token=TOKEN)
    try:
        over = json.dumps({**base, "description": "x" * (pad + 1)})
        got = api.post(route, data=over, headers={"Content-Type": "application/json"})
        assert got.status_code == 413, got.text
        assert got.json()["message"] == (
            f"the definition is {len(over):,} bytes, over the 1024 KiB a definition may hold"
            " (as an agent.yaml or workflow.yaml file)"
        )
        assert api.get(route + "/big").status_code == 404  # nothing written
        fits = json.dumps({**base, "description": "x" * pad})
        got = api.post(route, data=fits, headers={"Content-Type": "application/json"})
        assert got.status_code == 201, got.text
    finally:
        api.stop()


def test_lists_flag_what_cannot_run_in_either_dialect(store_target: Target, tmp_path: Path) -> None:
    """`cannot_run` (tests/unit/test_list_flags_unrunnable.py) from each dialect's SQL: a
    workflow's step agents read in SQL, the agents they name read once a page."""
    home, env = tmp_path / "home", store_target.env
    assert swarm_inproc(home, "status", "--init", **env).returncode == 0
    assert swarm_inproc(home, "agent", "list", **env).returncode == 0  # (the registry made)
    for name, kind in (("good", "shell"), ("odd", "nosuch")):
        spec = json.dumps({"name": name, "version": "1.0.0", "kind": kind, "command": "true"})
        registry_sql(
            store_target, home,
            f"INSERT INTO agents (name, version, kind, spec) VALUES ('{name}', '1.0.0', '{kind}', '{spec}')",
        )  # fmt: skip
    flows = {
        "w-good": (["good", "echo"], None),
        "w-ghost": (["good", "ghost", "ghost", 7], "unknown agent 'ghost'"),
        "w-odd": (["odd"], "agent 'odd': unknown kind 'nosuch'"),
        "w-bad": ([7], "a step names no agent"),
    }
    for name, (agents, _) in flows.items():
        steps = [{"id": f"s{i}", "agent": a} for i, a in enumerate(agents)]
        spec = json.dumps({"name": name, "version": "1.0.0", "steps": steps})
        registry_sql(
            store_target, home,
            f"INSERT INTO workflows (name, version, spec) VALUES ('{name}', '1.0.0', '{spec}')",
        )  # fmt: skip
    for args in (["workflow", "list", "--json"], ["workflow", "list"]):
        done = swarm_inproc(home, *args, **env)
        assert done.returncode == 0, done.stderr
    listed = json.loads(swarm_inproc(home, "workflow", "list", "--json", **env).stdout)
    assert {d["name"]: d["cannot_run"] for d in listed} == {n: w for n, (_, w) in flows.items()}
    agents = json.loads(swarm_inproc(home, "agent", "list", "--json", **env).stdout)
    why = {d["name"]: d["cannot_run"] for d in agents}
    assert why["odd"] == "unknown kind 'nosuch'" and why["good"] is None
    table = swarm_inproc(home, "workflow", "list", **env).stdout
    assert "cannot run" in table.splitlines()[0] and "unknown agent 'ghost'" in table
