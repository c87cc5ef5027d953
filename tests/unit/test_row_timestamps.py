"""A stored timestamp, whatever it holds, reads as a time or as `ValueError` (the only
error `parse_timestamp` raises); a workflow whose row has no readable time skips its cron
triggers with one warning."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_engine.engine.cron import CronFirer
from swarm_engine.registry import Registry
from swarm_engine.store.timestamps import parse_timestamp

STAMPS = [
    "10000000000000000000000", 10**22, 10**400, -(10**30), 1e300, "0000-01-01",
    "10000-01-01", "2026-13-01", "2026-02-32", "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:59:59-01:00", "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00+99:99",
    "9" * 5000, "1" + "0" * 400 + ".5", "-" + "9" * 20,
]  # fmt: skip


@pytest.mark.parametrize("value", STAMPS, ids=[repr(s)[:40] for s in STAMPS])
def test_a_timestamp_out_of_range_is_a_value_error(value: object) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(value)


STAMP_TEXT = st.from_regex(
    r"\A[+-]?\d{1,25}(\.\d{1,8})?\Z|\A\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?"
    r"\s?(Z|[+-]\d{2}:?\d{2})?\Z"
)


@settings(max_examples=500)
@given(
    st.one_of(
        STAMP_TEXT,
        st.text(),
        st.integers(),
        st.floats(),
        st.binary(max_size=8),
        st.booleans(),
        st.none(),
    )
)
def test_parse_timestamp_raises_only_its_documented_error(value: object) -> None:
    try:
        stamp = parse_timestamp(value)
    except ValueError:
        return
    assert stamp is None or (isinstance(stamp, datetime) and stamp.utcoffset() is not None)


class _NoStore:
    pass


async def _now(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


async def test_a_workflow_whose_row_has_no_time_skips_its_triggers_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reg = Registry(tmp_path / "registry.db", tmp_path / "packages")
    try:
        conn = sqlite3.connect(tmp_path / "registry.db", isolation_level=None)
        for name, created in (("cronbad", "10000000000000000000000"), ("cronok", None)):
            spec = {
                "name": name,
                "steps": [{"id": "s", "agent": "echo"}],
                "triggers": [{"name": f"{name}-t", "cron": "* * * * *"}],
            }
            conn.execute(
                "INSERT INTO workflows (name, version, spec, created_at)"
                " VALUES (?, '1.0.0', ?, coalesce(?, strftime('%Y-%m-%dT%H:%M:%fZ','now')))",
                (name, json.dumps(spec), created),
            )
        conn.close()
        firer = CronFirer(_NoStore(), reg, _now)  # type: ignore[arg-type]
        with caplog.at_level(logging.WARNING, logger="swarm_engine.engine.cron"):
            for _ in range(3):  # every re-read of the registry
                await firer._read_schedules()
        assert [t.name for _, t, _ in firer._schedules] == ["cronok-t"]
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1, warnings
        assert "cronbad@1.0.0" in warnings[0] and "created_at" in warnings[0]
        assert "cronbad-t" in warnings[0] and "\n" not in warnings[0]
    finally:
        reg.close()


@pytest.mark.parametrize(
    ("text", "why"),
    [("infinity", "infinity, which the engine cannot hold"),
     ("-infinity", "-infinity, which the engine cannot hold"),
     ("294276-12-31 00:00:00+00", "after year 9999, which the engine cannot hold"),
     ("4713-01-01 00:00:00+00 BC", "before year 1, which the engine cannot hold")],
)  # fmt: skip
def test_a_postgresql_instant_python_cannot_hold_is_a_value_error_saying_why(
    text: str, why: str
) -> None:
    """The PostgreSQL driver hands such a `timestamptz` over as `UnheldInstant` (its
    text): read as a defect with its reason, never as an error of the whole statement."""
    from swarm_engine.store.rows import decode_record
    from swarm_engine.store.timestamps import UnheldInstant

    with pytest.raises(ValueError, match=why):
        parse_timestamp(UnheldInstant(text))
    record = decode_record({"id": 1, "created_at": UnheldInstant(text)})
    assert record["created_at"] is None
    assert record["defects"][0].startswith(f"created_at: {why}")
