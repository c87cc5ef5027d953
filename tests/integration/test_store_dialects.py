"""SQLite and PostgreSQL stores are kept in step: after every migration both have the same
tables, columns, keys, CHECK constraints and indexes, and the same named queries."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from swarm_engine.store import open_database
from swarm_engine.store.db import Dialect
from swarm_engine.store.queries import GROUPS, load
from swarm_engine.store.sqlite import migrations

Shape = dict[str, Any]


def sqlite_shape(path: Path) -> Shape:
    conn = sqlite3.connect(path)
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    shape: Shape = {}
    for table in sorted(tables):
        info = conn.execute(f"PRAGMA table_info({table})").fetchall()
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        shape[table] = {
            "columns": sorted(r[1] for r in info),
            "not_null": sorted(r[1] for r in info if r[3] or r[5]),
            "primary_key": [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]],
            "foreign_keys": sorted(
                (r[3], r[2]) for r in conn.execute(f"PRAGMA foreign_key_list({table})")
            ),
            "unique": sorted(
                tuple(c[2] for c in conn.execute(f"PRAGMA index_info({r[1]})"))
                for r in conn.execute(f"PRAGMA index_list({table})")
                if r[2] and r[3] == "u"
            ),
            # a JSON column's CHECK (json_valid(...)) is the jsonb type in PostgreSQL
            "checks": len(re.findall(r"\bCHECK\s*\(", sql)) - sql.count("json_valid("),
            "indexes": sorted(
                r[1]
                for r in conn.execute(f"PRAGMA index_list({table})")
                if r[3] == "c"  # made by CREATE INDEX
            ),
        }
    conn.close()
    return shape


def postgres_shape(url: str) -> Shape:
    import psycopg

    shape: Shape = {}
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_name <> 'swarm_schema'"
            )
        ]
        for table in sorted(tables):
            cols = conn.execute(
                "SELECT column_name, is_nullable FROM information_schema.columns"
                " WHERE table_name = %s",
                (table,),
            ).fetchall()
            cons = conn.execute(
                "SELECT contype, pg_get_constraintdef(c.oid),"
                " array(SELECT attname FROM unnest(conkey) WITH ORDINALITY k(n, o)"
                "       JOIN pg_attribute a ON a.attrelid = conrelid AND a.attnum = k.n"
                "       ORDER BY o), confrelid::regclass::text"
                " FROM pg_constraint c WHERE conrelid = %s::regclass",
                (table,),
            ).fetchall()
            shape[table] = {
                "columns": sorted(c[0] for c in cols),
                "not_null": sorted(c[0] for c in cols if c[1] == "NO"),
                "primary_key": next((list(c[2]) for c in cons if c[0] == "p"), []),
                "foreign_keys": sorted((c[2][0], c[3]) for c in cons if c[0] == "f"),
                "unique": sorted(tuple(c[2]) for c in cons if c[0] == "u"),
                "checks": sum(1 for c in cons if c[0] == "c"),
                "indexes": sorted(
                    r[0]
                    for r in conn.execute(
                        "SELECT indexname FROM pg_indexes WHERE tablename = %s"
                        " AND indexname NOT IN (SELECT conname FROM pg_constraint)",
                        (table,),
                    )
                ),
            }
    return shape


@pytest.mark.parametrize("schema", ["tickets", "registry"])
def test_both_dialects_have_the_same_schema(tmp_path: Path, pg_url: str, schema: str) -> None:
    open_database(tmp_path / "s.db", schema).close()
    open_database(pg_url, schema).close()
    lite, pg = sqlite_shape(tmp_path / "s.db"), postgres_shape(pg_url)
    assert sorted(lite) == sorted(pg)
    for table in lite:
        assert lite[table] == pg[table], table


@pytest.mark.parametrize("schema", ["tickets", "registry"])
def test_both_dialects_have_the_same_migration_numbers(schema: str) -> None:
    assert [n for n, _ in migrations(schema, "sqlite")] == [
        n for n, _ in migrations(schema, "postgresql")
    ]


@pytest.mark.parametrize("group", GROUPS)
def test_both_dialects_define_the_same_queries(group: str) -> None:
    assert load("sqlite", group).names() == load("postgresql", group).names()


def test_no_sql_outside_the_store() -> None:
    src = Path(__file__).resolve().parents[2] / "src" / "swarm_engine"
    statement = re.compile(r"[\"'](SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|PRAGMA)\b")
    offenders = [
        f"{path.relative_to(src)}: {line.strip()}"
        for path in src.rglob("*.py")
        if path.parts[len(src.parts)] != "store"
        for line in path.read_text().splitlines()
        # help texts show users sqlite3 and psql command lines: those are examples
        if statement.search(line) and not re.search(r"\b(sqlite3|psql)\b", line)
    ]
    assert offenders == []


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_an_engines_repeated_ticket_statements_copy_no_title_or_description(
    dialect: Dialect,
) -> None:
    """What an engine runs at every heartbeat and step (lease renewals, the checks that
    it still holds its tickets, status changes) reads back no whole row: a ticket's title
    and description (up to 64 KiB and 1 MiB) are copied out by reads and claims only."""
    queries = load(dialect, "tickets")
    for name in ("renew_leases", "held", "still_held", "mark_running", "finish", "fail_attempt"):
        sql = re.sub(r"--[^\n]*", "", getattr(queries, name))
        assert "*" not in sql and "title" not in sql and "description" not in sql, name


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_every_read_of_a_ticket_measures_its_inputs_and_result(dialect: Dialect) -> None:
    """Each statement that hands over ticket rows does so through `{{ticket_columns}}`,
    whose cap on `inputs` and `result` is the records' (`MAX_INPUTS_BYTES`,
    `MAX_RESULT_BYTES`): no `SELECT *` or `RETURNING *` of tickets is left to copy a value
    of any size."""
    from swarm_engine.records import MAX_INPUTS_BYTES, MAX_RESULT_BYTES

    queries = load(dialect, "tickets")
    columns = queries.ticket_columns
    assert columns.count(f"<= {MAX_INPUTS_BYTES} THEN tickets.inputs END AS inputs") == 1
    assert columns.count(f"<= {MAX_RESULT_BYTES} THEN tickets.result END AS result") == 1
    for name in sorted(queries.names()):
        sql = re.sub(r"--[^\n]*", "", getattr(queries, name))
        assert not re.search(r"SELECT \*\s+FROM tickets|RETURNING (tickets\.)?\*", sql), name
    for name in ("get", "list", "list_status", "page", "page_status", "open", "cancel",
                 "reopen", "claim", "claim_next"):  # fmt: skip
        assert columns in getattr(queries, name), name


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_every_read_of_a_run_step_or_event_measures_its_big_columns(dialect: Dialect) -> None:
    """Runs, steps and events are read through `{{run_columns}}`, `{{step_columns}}` and
    `{{event_columns}}`, whose caps are the records' (`MAX_RECORD_JSON_BYTES`,
    `MAX_ERROR_BYTES`, `MAX_NOTE_BYTES`): no `SELECT *` of them is left."""
    from swarm_engine.records import MAX_ERROR_BYTES, MAX_NOTE_BYTES, MAX_RECORD_JSON_BYTES

    runs, tickets = load(dialect, "runs"), load(dialect, "tickets")
    for columns, prefix in ((runs.run_columns, "r"), (runs.step_columns, "s")):
        for name in ("inputs", "outputs"):  # (a view lowers the cap: `values_cap`)
            (line,) = [c for c in columns.splitlines() if c.endswith(f"END AS {name},")]
            assert f"<= {MAX_RECORD_JSON_BYTES}" in line or f"({MAX_RECORD_JSON_BYTES}, " in line
            assert "values_cap" in line and f"THEN {prefix}.{name} END" in line, line
        assert f"<= {MAX_ERROR_BYTES} THEN {prefix}.error" in columns
    assert f"<= {MAX_ERROR_BYTES} THEN s.stop_reason" in runs.step_columns
    assert f"<= {MAX_NOTE_BYTES} THEN e.note" in tickets.event_columns
    assert f"<= {MAX_ERROR_BYTES} THEN tickets.error" in tickets.ticket_columns
    for queries in (runs, tickets):
        for name in sorted(queries.names()):
            sql = re.sub(r"--[^\n]*", "", getattr(queries, name))
            assert not re.search(r"SELECT (\w+\.)?\*", sql), name
    for name in ("get_run", "runs_for_ticket", "runs_for_workflow", "recent_runs"):
        assert runs.run_columns in getattr(runs, name), name
    for name in ("steps", "last_steps", "steps_from", "step_attempts_from", "steps_by_ids"):
        assert runs.step_columns in getattr(runs, name), name
    assert tickets.event_columns in tickets.events


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_metrics_reads_steps_through_one_column_list(dialect: Dialect) -> None:
    """`steps_after` (the walk) and `steps_with_ids` (the unfinished steps it passed) read
    the same columns, `{{step_usage_columns}}`, written once: a step's usage is counted
    alike whichever of them read it."""
    from swarm_engine.records import MAX_NAME_BYTES

    runs = load(dialect, "runs")
    columns = runs.step_usage_columns
    assert columns.startswith("id,") and columns.endswith("AS usage_values")
    assert f"<= {MAX_NAME_BYTES} THEN agent_name END AS agent_name" in columns
    for name in ("steps_after", "steps_with_ids"):
        assert f"SELECT {columns}\n  FROM step_executions WHERE id" in getattr(runs, name), name


def test_a_statement_may_hold_another() -> None:
    from swarm_engine.store.queries import parse

    text = "-- name: cols\na, b\n-- name: get\nSELECT {{cols}} FROM t WHERE id = :id\n"
    assert parse(text, dialect="sqlite", source="x")["get"] == "SELECT a, b FROM t WHERE id = :id"
    with pytest.raises(ValueError, match="names no statement"):
        parse("-- name: get\nSELECT {{nothing}} FROM t", dialect="sqlite", source="x")
