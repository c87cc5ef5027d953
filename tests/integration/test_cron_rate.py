"""A cron schedule fires at most once a minute unless its trigger says `sub_minute: true`
(each firing is a ticket: `0-59 0-23 1-31 1-12 0-6 0-59` was accepted and made 86,400
tickets a day; tester, LOW). Refused at registration, through the CLI and the API's
service alike, and skipped by the cron task's scan in a row another client wrote."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Target
from tests.support.cli import swarm_inproc

from swarm_engine.engine.cron import CronFirer
from swarm_engine.errors import ConfigError
from swarm_engine.registry import Registry
from swarm_engine.service import registry as service

EVERY_SECOND = "0-59 0-23 1-31 1-12 0-6 0-59"


async def _now(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def _definition(name: str, trigger: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "version": "1.0.0",
        "steps": [{"id": "s", "agent": "echo"}],
        "triggers": [{"name": f"{name}-t", **trigger}],
    }


def test_registration_refuses_a_schedule_firing_more_than_once_a_minute(
    store_target: Target, tmp_path: Path
) -> None:
    folder = tmp_path / "fast"
    folder.mkdir()
    (folder / "workflow.yaml").write_text(
        "name: fast\nsteps:\n  - id: s\n    agent: echo\n"
        f'triggers:\n  - name: fast-t\n    cron: "{EVERY_SECOND}"\n'
    )
    home = tmp_path / "home"
    done = swarm_inproc(home, "workflow", "register", str(folder), **store_target.env)
    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"error: {folder / 'workflow.yaml'}: trigger 'fast-t' fires up to 60 times a minute"
        f" ('{EVERY_SECOND}': up to 86,400 tickets a day); a schedule fires at most once a"
        " minute unless its trigger says sub_minute: true"
    )
    where = store_target.target if store_target.dialect == "postgresql" else home / "registry.db"
    registry = Registry(where, tmp_path / "packages")
    try:
        with pytest.raises(ConfigError, match="fires up to 2 times a minute"):  # POST /v1/...
            service.register_workflow(registry, _definition("api", {"cron": "* * * * * 0,30"}))
        for name, trigger in (
            ("slow", {"cron": "30 * * * * 15"}),  # one second a minute
            ("opted", {"cron": EVERY_SECOND, "sub_minute": True}),
        ):
            service.register_workflow(registry, _definition(name, trigger))
    finally:
        registry.close()


async def test_the_cron_scan_skips_a_row_firing_more_than_once_a_minute(
    store_target: Target, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    where = store_target  # (SQLite: a registry file of its own, as another client writes it)
    if store_target.dialect == "sqlite":
        where = Target("sqlite", tmp_path / "registry.db", {})
    registry = Registry(where.target, tmp_path / "packages")
    try:
        for name, trigger in (
            ("fast", {"cron": EVERY_SECOND}),
            ("opted", {"cron": EVERY_SECOND, "sub_minute": True}),
        ):
            spec = json.dumps(_definition(name, trigger)).replace("'", "''")
            where.sql(
                f"INSERT INTO workflows (name, version, spec) VALUES ('{name}', '1.0.0', '{spec}')"
            )
        firer = CronFirer(object(), registry, _now)  # type: ignore[arg-type]
        with caplog.at_level(logging.WARNING):
            await firer._read_schedules()
        assert [(w.name, t.cron) for w, t, _ in firer._schedules] == [("opted", EVERY_SECOND)]
        said = [r.getMessage() for r in caplog.records]
        assert any(
            "workflow fast@1.0.0 in the registry: trigger 'fast-t' fires up to 60 times a"
            " minute" in line
            for line in said
        ), said
    finally:
        registry.close()
