"""`cleanup` removes the `run/engine-PID.pid` / `.ready` files of engines that are gone
(killed with `kill -9`, or a pid now running another program), names them, and never
touches those of an engine that runs. They stayed for ever."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from tests.acceptance.conftest import engine_ready
from tests.support.cli import start_engine, swarm, wait_until


def engine_files(run_dir: Path, pid: int) -> set[str]:
    return {p.name for p in run_dir.glob(f"engine-{pid}.*") if p.suffix in (".pid", ".ready")}


def test_cleanup_removes_the_files_of_gone_engines_only(
    home: Path, engines: list[subprocess.Popen[str]]
) -> None:
    run_dir = home / "run"
    killed = start_engine(home)
    engines.append(killed)
    engine_ready(home, killed)
    wait_until(lambda: len(engine_files(run_dir, killed.pid)) == 2, 30, "pid and ready files")
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert engine_files(run_dir, killed.pid) == {
        f"engine-{killed.pid}.pid",
        f"engine-{killed.pid}.ready",
    }

    said = swarm(home, "cleanup", check=True)
    assert (
        f"removed 2 pid/ready file(s) of gone engines: engine-{killed.pid}.pid,"
        f" engine-{killed.pid}.ready"
    ) in said.stdout, said.stdout
    for what in ("pid", "ready"):  # again, for the --json run below
        (run_dir / f"engine-{killed.pid}.{what}").write_text(f"{killed.pid}\n")

    other = subprocess.Popen(["sleep", "120"])  # a pid an engine's files name, reused
    try:
        for what in ("pid", "ready"):
            (run_dir / f"engine-{other.pid}.{what}").write_text(f"{other.pid}\n")
        running = start_engine(home)
        engines.append(running)
        engine_ready(home, running)
        wait_until(lambda: len(engine_files(run_dir, running.pid)) == 2, 30, "its files")
        (run_dir / "engine-notapid.pid").write_text("x")  # not a name an engine writes

        gone = sorted(engine_files(run_dir, killed.pid) | engine_files(run_dir, other.pid))
        assert len(gone) == 4
        done = swarm(home, "cleanup", "--json", check=True)
        assert json.loads(done.stdout)["engine_files"] == gone
        assert engine_files(run_dir, killed.pid) == set()
        assert engine_files(run_dir, other.pid) == set()
        assert other.poll() is None  # only files removed, no process touched
        assert engine_files(run_dir, running.pid) == {
            f"engine-{running.pid}.pid",
            f"engine-{running.pid}.ready",
        }
        assert running.poll() is None
        assert (run_dir / "engine-notapid.pid").exists()

        assert "pid/ready file(s) of gone engines" not in done.stdout  # (JSON alone)
        again = swarm(home, "cleanup", check=True)
        assert "pid/ready file(s)" not in again.stdout, again.stdout  # none left to remove
        assert engine_files(run_dir, running.pid) != set()
    finally:
        other.kill()
        other.wait()
