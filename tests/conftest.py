"""Fixtures shared by every suite: the store under test, SQLite or PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support.postgres import Server, pg_query, psql, start_server

if TYPE_CHECKING:
    from swarm_engine.store import Store

# No time limit on a property test's example (hypothesis' default is 200 ms, and its
# too-slow health check another): a time bound is a timing assertion, and failed on a
# loaded host (an example of 0.2 ms took 274 ms once).
settings.register_profile("swarm", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("swarm")

if "PYTEST_XDIST_WORKER" in os.environ:
    # pytest-xdist's workers set COLUMNS=80 and LINES=24; the commands the tests run must
    # see what they see under a plain pytest (no COLUMNS: 140 columns when piped)
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)


@pytest.fixture(scope="session", autouse=True)
def _no_workspace_mounts_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the session, unmount the workspaces (`vm/diskcap.py`) that engines killed by
    tests left mounted under its temporary folders (`cleanup` would, once their leases
    ran out), so that no loop device outlives the session and its folders can go."""
    yield
    if os.geteuid() != 0:
        return
    base = str(tmp_path_factory.getbasetemp()) + os.sep
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        points = [line.split()[4] for line in info]
    for point in sorted((p for p in points if p.startswith(base)), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Server]:
    """A throwaway PostgreSQL server for the session (skips, saying why, if none)."""
    server = start_server()
    if isinstance(server, str):
        pytest.skip(f"no PostgreSQL server: {server}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres: Server) -> str:
    """A new, empty database on the throwaway server."""
    return postgres.create_database()


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    """The ticket store on a new, empty database of the throwaway server."""
    from swarm_engine.store import open_store

    opened = open_store(pg_url)
    try:
        yield opened
    finally:
        opened.close()


@dataclass
class Target:
    """A store to test against: `target` is what `open_store` takes; `env` is what the
    `swarm-engine` command needs to use it; `sql` writes as an outside client would."""

    dialect: str
    target: str | Path
    env: dict[str, str]

    def sql(self, statement: str) -> str:
        if isinstance(self.target, str):
            return psql(self.target, statement)
        from tests.support.cli import sqlite_shell

        return sqlite_shell(self.target, statement)

    def rows(self, statement: str, **params: Any) -> list[dict[str, Any]]:
        """Rows as dicts; `statement` uses psycopg's `%(name)s` parameters."""
        if isinstance(self.target, str):
            return pg_query(self.target, statement, params)
        for key in params:
            statement = statement.replace(f"%({key})s", f":{key}")
        conn = sqlite3.connect(self.target, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(statement, params)]
        finally:
            conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """The ticket store under test, once per dialect."""
    if request.param == "sqlite":
        return Target("sqlite", tmp_path / "home" / "tickets.db", {})
    url = request.getfixturevalue("pg_url")
    return Target("postgresql", url, {"SWARM_DATABASE_URL": url})
