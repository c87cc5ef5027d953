"""The cron task's read of the registry is cheap and bounded whatever its rows hold: it
hands over no spec of a workflow without triggers, reads nothing while the registry is
unchanged, decodes a workflow with triggers again only once its row changed (an agent
its steps name looked up each time), sees a row edited in place, and reads at most a
bounded amount a round (the rest the next round, told once)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.postgres import pg_query

from swarm_engine.engine import cron
from swarm_engine.engine.cron import CronFirer
from swarm_engine.registry import Registry
from swarm_engine.registry.schedules import ScheduleScan

BIG = 400_000
"""Bytes of the spec of each workflow without triggers (its steps' padding)."""


class _NoStore:
    pass


async def _now(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def _spec(name: str, triggers: list[dict[str, Any]], pad: int = 0, agent: str = "echo") -> str:
    step = {"id": "s", "agent": agent, "inputs": {"text": "x" * pad}}
    return json.dumps({"name": name, "version": "1.0.0", "steps": [step], "triggers": triggers})


class _Target:
    """A registry (SQLite file or PostgreSQL URL) and a way to write it as another client."""

    def __init__(self, target: str | Path) -> None:
        self.target = target

    def write(self, sql: str, *args: Any) -> None:
        """SQLite only."""
        assert isinstance(self.target, Path)
        conn = sqlite3.connect(self.target, isolation_level=None)
        try:
            conn.execute(sql, args)
        finally:
            conn.close()

    def insert(self, name: str, spec: str) -> None:
        if isinstance(self.target, str):
            import psycopg

            with psycopg.connect(self.target, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO workflows (name, version, spec) VALUES (%s, '1.0.0', %s::jsonb)",
                    (name, spec),
                )
            return
        self.write(
            "INSERT INTO workflows (name, version, spec, created_at) VALUES (?, '1.0.0', ?,"
            " strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
            name,
            spec,
        )

    def run(self, sql: str, *args: Any) -> None:
        """One statement as another client (`?` parameters), on either database."""
        if isinstance(self.target, str):
            import psycopg

            with psycopg.connect(self.target, autocommit=True) as conn:
                conn.execute(sql.replace("?", "%s"), args)
            return
        self.write(sql, *args)

    def update_spec(self, name: str, spec: str) -> None:
        """Edit a row in place, keeping its created_at."""
        if isinstance(self.target, str):
            import psycopg

            with psycopg.connect(self.target, autocommit=True) as conn:
                conn.execute("UPDATE workflows SET spec = %s::jsonb WHERE name = %s", (spec, name))
            return
        self.write("UPDATE workflows SET spec = ? WHERE name = ?", spec, name)


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> _Target:
    if request.param == "sqlite":
        return _Target(tmp_path / "registry.db")
    return _Target(str(request.getfixturevalue("pg_url")))


@pytest.fixture
def registry(target: _Target, tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(target.target, tmp_path / "packages")
    try:
        yield reg
    finally:
        reg.close()


class _Counted:
    """The registry's database, counting the rows and the bytes of text it hands over."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.rows = 0
        self.bytes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def _count(self, rows: list[Any]) -> None:
        for row in rows:
            self.rows += 1
            self.bytes += sum(len(str(row[k])) for k in row.keys())  # noqa: SIM118

    def one(self, sql: str, params: Any = None) -> Any:
        row = self._db.one(sql, params)
        self._count([] if row is None else [row])
        return row

    def all(self, sql: str, params: Any = None) -> list[Any]:
        rows: list[Any] = self._db.all(sql, params)
        self._count(rows)
        return rows


def _counted(registry: Registry) -> _Counted:
    counted = _Counted(registry.defs.db)
    registry.defs.db = counted
    return counted


def _scans(monkeypatch: pytest.MonkeyPatch) -> list[ScheduleScan]:
    """Every pass the cron task begins from now on, to read its counters."""
    made: list[ScheduleScan] = []

    class Recorded(ScheduleScan):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(cron, "ScheduleScan", Recorded)
    return made


def _crons(firer: CronFirer) -> list[tuple[str, str | None]]:
    return sorted((w.name, t.cron) for w, t, _ in firer._schedules)


def _agent_row(target: _Target, name: str) -> None:
    spec = json.dumps({"name": name, "version": "1.0.0", "kind": "shell", "command": "true"})
    target.run(
        "INSERT INTO agents (name, version, kind, spec) VALUES (?, '1.0.0', 'shell', ?)",
        name,
        spec,
    )


async def test_the_scan_reads_only_workflows_with_triggers_and_nothing_when_unchanged(
    target: _Target, registry: Registry
) -> None:
    for i in range(5):
        target.insert(f"quiet{i}", _spec(f"quiet{i}", [], pad=BIG))
    target.insert("nightly", _spec("nightly", [{"name": "nightly-t", "cron": "0 3 * * *"}]))
    counted = _counted(registry)
    firer = CronFirer(_NoStore(), registry, _now)  # type: ignore[arg-type]

    await firer._read_schedules()
    assert [(w.ref, t.cron) for w, t, _ in firer._schedules] == [("nightly@1.0.0", "0 3 * * *")]
    assert counted.bytes < 20_000  # (5 specs of 400 kB not handed over)

    before = counted.rows
    for _ in range(3):  # unchanged: one small query a round, no workflow row read
        await firer._read_schedules()
    assert counted.rows - before == 3

    # a row edited in place by another client (its created_at kept) is seen at the next round
    target.update_spec("nightly", _spec("nightly", [{"name": "nightly-t", "cron": "0 4 * * *"}]))
    await firer._read_schedules()
    assert [t.cron for _, t, _ in firer._schedules] == ["0 4 * * *"]
    assert counted.bytes < 40_000

    # so is a row without triggers that gains one in place
    target.update_spec("quiet3", _spec("quiet3", [{"name": "q-t", "cron": "0 5 * * *"}], pad=BIG))
    await firer._read_schedules()
    assert sorted(t.name for _, t, _ in firer._schedules) == ["nightly-t", "q-t"]


async def test_an_edit_in_place_keeping_the_size_that_adds_a_trigger_is_seen(
    target: _Target, registry: Registry
) -> None:
    """Another client renames a misspelt key in place (`triggerz` -> `triggers`): the row
    keeps its size and created_at, and its schedule fires from the next round (tester
    h-209: on SQLite the scan took the row as unchanged, so never until a restart)."""
    spec = _spec("typo", [{"name": "typo-t", "cron": "0 3 * * *"}], pad=BIG)
    target.insert("typo", spec.replace('"triggers"', '"triggerz"'))
    firer = CronFirer(_NoStore(), registry, _now)  # type: ignore[arg-type]
    await firer._read_schedules()
    assert firer._schedules == []
    target.update_spec("typo", spec)
    await firer._read_schedules()
    assert [t.name for _, t, _ in firer._schedules] == ["typo-t"]
    # and a trigger spelt with an escape in its key is seen too
    escaped = spec.replace('"triggers"', '"trigger\\u0073"').replace("typo", "typo2")
    target.insert("typo2", escaped)
    await firer._read_schedules()
    assert sorted(t.name for _, t, _ in firer._schedules) == ["typo-t", "typo2-t"]


async def test_a_row_giving_triggers_twice_is_decoded_and_said_once(
    target: _Target, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """`triggers` given twice, the empty one first: the row does not decode (a key given
    twice), so its schedule is skipped with its warning line (tester h-211: SQLite's JSON
    path read the first, empty, and the row was taken as without triggers, silently)."""
    if isinstance(target.target, str):
        pytest.skip("PostgreSQL's jsonb keeps the last of a key given twice: one triggers")
    spec = _spec("twice", [{"name": "twice-t", "cron": "0 3 * * *"}])
    target.insert("twice", spec.replace('"triggers"', '"triggers": [], "triggers"'))
    firer = CronFirer(_NoStore(), registry, _now)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING):
        await firer._read_schedules()
    assert firer._schedules == []
    said = [r.getMessage() for r in caplog.records if "twice" in r.getMessage()]
    assert len(said) == 1 and 'duplicate key "triggers"' in said[0], said


async def test_the_latest_version_decides_even_without_triggers(
    target: _Target, registry: Registry
) -> None:
    target.insert("w", _spec("w", [{"name": "w-t", "cron": "0 3 * * *"}]))
    firer = CronFirer(_NoStore(), registry, _now)  # type: ignore[arg-type]
    await firer._read_schedules()
    assert [t.name for _, t, _ in firer._schedules] == ["w-t"]
    spec = json.loads(_spec("w", []))
    spec["version"] = "2.0.0"
    if isinstance(target.target, str):
        pg_query(
            target.target,
            "INSERT INTO workflows (name, version, spec) VALUES ('w', '2.0.0', %(s)s::jsonb)"
            " RETURNING 1",
            {"s": json.dumps(spec)},
        )
    else:
        target.write(
            "INSERT INTO workflows (name, version, spec, created_at) VALUES ('w', '2.0.0', ?,"
            " strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
            json.dumps(spec),
        )
    await firer._read_schedules()
    assert firer._schedules == []  # w@2.0.0 declares none: w@1.0.0's no longer fires


async def test_a_pass_is_bounded_a_round_and_a_cut_is_told_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = _Target(tmp_path / "registry.db")
    reg = Registry(target.target, tmp_path / "packages")
    try:
        for i in range(4):
            target.insert(f"quiet{i}", _spec(f"quiet{i}", [], pad=BIG))
        target.insert("zz", _spec("zz", [{"name": "zz-t", "cron": "0 3 * * *"}]))
        bad = json.loads(_spec("zz-bad", []))
        bad["triggers"] = 5  # malformed: told once, whatever happens next
        target.insert("zz-bad", json.dumps(bad))
        monkeypatch.setattr(cron, "SCAN_BYTES", BIG)  # about one big row a round
        monkeypatch.setattr(cron, "SCAN_ROWS", 2)
        counted = _counted(reg)
        firer = CronFirer(_NoStore(), reg, _now)  # type: ignore[arg-type]
        rounds = 0
        with caplog.at_level(logging.WARNING, logger="swarm_engine.engine.cron"):
            while not firer._schedules:
                rounds += 1
                last = counted.rows
                await firer._read_schedules()
                assert counted.rows - last <= 5  # the marker, 2 keys, at most 2 rows read
            assert rounds >= 4
            target.insert("other", _spec("other", []))  # the registry changed: a new pass
            for _ in range(8):
                await firer._read_schedules()
        assert [t.name for _, t, _ in firer._schedules] == ["zz-t"]
        warnings = [r.getMessage() for r in caplog.records]
        assert sum("read in parts" in w for w in warnings) == 1, warnings
        assert sum("zz-bad@1.0.0" in w for w in warnings) == 1, warnings
    finally:
        reg.close()


async def test_rows_known_quiet_still_count_against_a_rounds_bytes(
    target: _Target, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row found without triggers before is checked again in SQL after any registry
    change (on SQLite a scan of its text: an edit in place may keep its size): that work
    counts against the round's `SCAN_BYTES`, so a pass over big rows is spread over rounds
    as the first one was (a tester's finding: 30 rows of 7 MB, 2.5 CPU-s in one round).
    PostgreSQL measures a row as stored (compressed: this padding takes a few bytes)."""
    if isinstance(target.target, str):
        pytest.skip("PostgreSQL stores this padding compressed, a few bytes to check")
    for i in range(4):
        target.insert(f"quiet{i}", _spec(f"quiet{i}", [], pad=BIG))
    monkeypatch.setattr(cron, "SCAN_BYTES", BIG)  # about one big row a round
    scans = _scans(monkeypatch)
    firer = CronFirer(_NoStore(), registry, _now)  # type: ignore[arg-type]
    for _ in range(8):
        await firer._read_schedules()
    assert len(scans) == 1 and scans[0].steps >= 4
    _agent_row(target, "unrelated")  # the registry changed: a new pass
    for _ in range(8):
        await firer._read_schedules()
    assert len(scans) == 2 and scans[1].steps >= 4, scans[1].steps


async def test_a_pass_after_an_unrelated_change_decodes_no_workflow_with_triggers(
    target: _Target, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client registers an agent no workflow names: the next pass reads no
    workflow row that declares triggers (each kept from the pass before, its spec's mark
    unchanged), and its schedules stay (tester: 30 such rows of 5 MB were decoded again at
    every registry change, 387 MB RSS)."""
    target.insert("a", _spec("a", [{"name": "a-t", "cron": "0 3 * * *"}], pad=BIG))
    target.insert("b", _spec("b", [{"name": "b-t", "cron": "0 5 * * *"}], pad=BIG))
    target.insert("quiet", _spec("quiet", [], pad=BIG))
    scans = _scans(monkeypatch)
    firer = CronFirer(_NoStore(), registry, _now)  # type: ignore[arg-type]
    await firer._read_schedules()
    assert _crons(firer) == [("a", "0 3 * * *"), ("b", "0 5 * * *")]
    assert scans[-1].bytes_read > 2 * BIG
    for i in range(2):
        _agent_row(target, f"unrelated{i}")
        await firer._read_schedules()
        assert len(scans) == 2 + i  # (the registry changed: a pass)
        assert scans[-1].bytes_read == 0
        assert scans[-1].rows_kept == 2
        assert _crons(firer) == [("a", "0 3 * * *"), ("b", "0 5 * * *")]


async def test_an_edit_in_place_keeping_the_size_of_a_kept_row_is_seen(
    target: _Target, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client changes a cron in place (same length, same created_at): that row is
    read and decoded again, the other one kept."""
    target.insert("a", _spec("a", [{"name": "a-t", "cron": "0 3 * * *"}], pad=BIG))
    target.insert("b", _spec("b", [{"name": "b-t", "cron": "0 5 * * *"}], pad=BIG))
    scans = _scans(monkeypatch)
    firer = CronFirer(_NoStore(), registry, _now)  # type: ignore[arg-type]
    await firer._read_schedules()
    edited = _spec("a", [{"name": "a-t", "cron": "0 4 * * *"}], pad=BIG)
    assert len(edited) == len(_spec("a", [{"name": "a-t", "cron": "0 3 * * *"}], pad=BIG))
    target.update_spec("a", edited)
    await firer._read_schedules()
    assert _crons(firer) == [("a", "0 4 * * *"), ("b", "0 5 * * *")]
    assert 0 < scans[-1].bytes_read < 2 * BIG  # (a's spec: jsonb may space it otherwise)
    assert scans[-1].rows_kept == 1


async def test_a_trigger_removed_in_place_from_a_kept_row_is_seen(
    target: _Target, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client takes a row's triggers away in place (the key misspelt: same size,
    same created_at): its schedule goes at the next pass, the other row's stays, and
    neither is decoded."""
    spec = _spec("a", [{"name": "a-t", "cron": "0 3 * * *"}], pad=BIG)
    target.insert("a", spec)
    target.insert("b", _spec("b", [{"name": "b-t", "cron": "0 5 * * *"}], pad=BIG))
    scans = _scans(monkeypatch)
    firer = CronFirer(_NoStore(), registry, _now)  # type: ignore[arg-type]
    await firer._read_schedules()
    assert _crons(firer) == [("a", "0 3 * * *"), ("b", "0 5 * * *")]
    target.update_spec("a", spec.replace('"triggers"', '"triggerz"'))
    await firer._read_schedules()
    assert _crons(firer) == [("b", "0 5 * * *")]
    assert scans[-1].bytes_read == 0 and scans[-1].rows_kept == 1
    target.update_spec("a", spec)  # and back: read again
    await firer._read_schedules()
    assert _crons(firer) == [("a", "0 3 * * *"), ("b", "0 5 * * *")]
    assert scans[-1].rows_kept == 1 and scans[-1].bytes_read > BIG


async def test_an_agent_removed_skips_a_kept_workflow_with_its_line(
    target: _Target,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A kept workflow whose step names an agent another client then deletes is skipped at
    the next pass, with `check_stored_workflow`'s line (its row not read again); once the
    agent is back, it fires again."""
    _agent_row(target, "tool")
    target.insert("w", _spec("w", [{"name": "w-t", "cron": "0 3 * * *"}], pad=BIG, agent="tool"))
    target.insert("b", _spec("b", [{"name": "b-t", "cron": "0 5 * * *"}], pad=BIG))
    scans = _scans(monkeypatch)
    firer = CronFirer(_NoStore(), registry, _now)  # type: ignore[arg-type]
    await firer._read_schedules()
    assert _crons(firer) == [("b", "0 5 * * *"), ("w", "0 3 * * *")]
    target.run("DELETE FROM agents WHERE name = 'tool'")
    with caplog.at_level(logging.WARNING, logger="swarm_engine.engine.cron"):
        await firer._read_schedules()
    assert _crons(firer) == [("b", "0 5 * * *")]
    line = "workflow w@1.0.0 in the registry: step 's': unknown agent 'tool'"
    assert scans[-1].skipped == [line]
    assert scans[-1].bytes_read == 0 and scans[-1].rows_kept == 2
    assert [r.getMessage() for r in caplog.records] == [f"{line}: its triggers are skipped"]
    _agent_row(target, "tool")
    await firer._read_schedules()
    assert _crons(firer) == [("b", "0 5 * * *"), ("w", "0 3 * * *")]
    assert scans[-1].bytes_read == 0 and scans[-1].skipped == []


async def test_a_kept_broken_workflow_gives_the_line_a_whole_check_would(
    target: _Target, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kept workflow broken past its first step (a later step needs an unknown step) is
    skipped with that line while its agents exist, and with the first step's unknown agent
    once that agent is gone (what `workflow show` would say), its row not read again."""
    _agent_row(target, "tool")
    spec = json.loads(_spec("w", [{"name": "w-t", "cron": "0 3 * * *"}], pad=BIG, agent="tool"))
    spec["steps"].append({"id": "t", "agent": "echo", "needs": ["nope"]})
    target.insert("w", json.dumps(spec))
    scans = _scans(monkeypatch)
    firer = CronFirer(_NoStore(), registry, _now)  # type: ignore[arg-type]
    await firer._read_schedules()
    broken = "workflow w@1.0.0 in the registry: step 't' references unknown step 'nope'"
    assert scans[-1].skipped == [broken] and firer._schedules == []
    target.run("DELETE FROM agents WHERE name = 'tool'")
    await firer._read_schedules()
    assert scans[-1].skipped == ["workflow w@1.0.0 in the registry: step 's': unknown agent 'tool'"]
    assert scans[-1].bytes_read == 0
    _agent_row(target, "tool")
    await firer._read_schedules()
    assert scans[-1].skipped == [broken] and scans[-1].bytes_read == 0
