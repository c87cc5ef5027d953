from __future__ import annotations

import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.cli import end_engine, query, swarm_inproc, wait_until


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    assert swarm_inproc(h, "status", "--init").returncode == 0  # creates both databases
    return h


def write_agent(folder: Path, yaml_text: str, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "agent.yaml").write_text(textwrap.dedent(yaml_text))
    for name, text in (files or {}).items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


def pg_home(pg_url: str, tmp_path: Path, timings: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A home whose ticket store is the database `pg_url`, made ready, with the
    environment (`timings` among it) its commands run with."""
    home = tmp_path / "home"
    env = {"SWARM_DATABASE_URL": pg_url, **timings}
    assert swarm_inproc(home, "status", "--init", **env).returncode == 0
    return home, env


def nap_ticket(home: Path, tmp_path: Path, **env: str) -> None:
    """Ticket 1, of an agent `nap` (shell, `sleep 300`): a step that runs until stopped."""
    write_agent(tmp_path / "nap", "name: nap\nkind: shell\ncommand: sleep 300\n")
    assert swarm_inproc(home, "agent", "register", str(tmp_path / "nap"), **env).returncode == 0
    made = swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "nap", **env)
    assert made.returncode == 0, made.stderr


def write_workflow(folder: Path, yaml_text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "workflow.yaml").write_text(textwrap.dedent(yaml_text))
    return folder


def engine_ready(home: Path, proc: subprocess.Popen[str]) -> None:
    def registered() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        return bool(
            query(
                home / "tickets.db",
                "SELECT 1 FROM engines WHERE pid = ? AND state = 'running'",
                proc.pid,
            )
        )

    wait_until(registered, 30, "the engine to register")


def stop(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=timeout)
    return out


@pytest.fixture
def engines() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        end_engine(p)


def status_of(home: Path, tid: int) -> str:
    return str(
        query(home / "tickets.db", "SELECT status FROM tickets WHERE id = ?", tid)[0]["status"]
    )
