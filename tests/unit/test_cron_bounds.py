"""Cron triggers cost the engine little however costly their schedules: a workflow row
with more than `MAX_TRIGGERS` triggers is skipped with one warning, and each distinct
schedule's slots are computed off the event loop once per slot, not every tick."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from swarm_engine.engine import cron
from swarm_engine.engine.cron import CronFirer
from swarm_engine.models import MAX_TRIGGERS, TriggerSpec, WorkflowSpec
from swarm_engine.registry import Registry


class _NoStore:
    pass


async def _now(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def _insert(db: Path, name: str, triggers: int) -> None:
    spec = {
        "name": name,
        "steps": [{"id": "s", "agent": "echo"}],
        "triggers": [{"name": f"{name}-{i}", "cron": "0 0 29 2 1#5"} for i in range(triggers)],
    }
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "INSERT INTO workflows (name, version, spec, created_at)"
        " VALUES (?, '1.0.0', ?, strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
        (name, json.dumps(spec)),
    )
    conn.close()


async def test_a_row_with_too_many_triggers_is_skipped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reg = Registry(tmp_path / "registry.db", tmp_path / "packages")
    try:
        _insert(tmp_path / "registry.db", "huge", MAX_TRIGGERS * 100)
        _insert(tmp_path / "registry.db", "fine", MAX_TRIGGERS)
        firer = CronFirer(_NoStore(), reg, _now)  # type: ignore[arg-type]
        with caplog.at_level(logging.WARNING, logger="swarm_engine.engine.cron"):
            for _ in range(3):  # every re-read of the registry
                await firer._read_schedules()
        assert {w.name for w, _, _ in firer._schedules} == {"fine"}
        assert len(firer._schedules) == MAX_TRIGGERS
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1, warnings
        assert "huge@1.0.0" in warnings[0] and f"at most {MAX_TRIGGERS} triggers" in warnings[0]
        assert "skipped" in warnings[0] and "\n" not in warnings[0]
    finally:
        reg.close()


async def test_slots_are_computed_off_the_loop_once_per_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, bool]] = []
    real = cron.latest_slot

    def counted(schedule: str, now: datetime) -> datetime:
        calls.append((schedule, threading.current_thread() is threading.main_thread()))
        return real(schedule, now)

    monkeypatch.setattr(cron, "latest_slot", counted)
    workflow = WorkflowSpec(name="w", steps=[{"id": "s", "agent": "echo"}])  # type: ignore[list-item]
    costly = [TriggerSpec(name=f"c{i}", cron="0 0 29 2 1#5") for i in range(MAX_TRIGGERS)]
    minutely = [TriggerSpec(name="m", cron="* * * * *")]
    t0 = datetime(2026, 3, 2, 12, 0, 10, tzinfo=UTC)
    firer = CronFirer(_NoStore(), None, _now)  # type: ignore[arg-type]
    firer._schedules = [(workflow, t, t0) for t in costly + minutely]

    await firer._refresh_slots(t0)
    assert sorted(s for s, _ in calls) == ["* * * * *", "0 0 29 2 1#5"]  # one per schedule
    assert not any(on_main for _, on_main in calls)  # off the event loop's thread
    for second in range(1, 50):  # the ticks of the same minute compute nothing
        now = t0 + timedelta(seconds=second)
        await firer._refresh_slots(now)
        assert 0.01 <= firer._until_next(now) <= cron.TICK_SECONDS
    assert len(calls) == 2
    await firer._refresh_slots(datetime(2026, 3, 2, 12, 1, tzinfo=UTC))  # the next minute
    assert [s for s, _ in calls[2:]] == ["* * * * *"]
    assert firer._slots["* * * * *"] == (
        datetime(2026, 3, 2, 12, 1, tzinfo=UTC),
        datetime(2026, 3, 2, 12, 2, tzinfo=UTC),
    )
