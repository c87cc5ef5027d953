"""`stop` looks for the engines of this host id on this store. An engine this home
started under another host id (`SWARM_HOST_ID=hA swarm-engine start`, then `stop`
without it) was `no engine is running on this host` and nothing more, its pid file in the
home's run folder all the while: the line now says which host id it runs as, and how to
stop it."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import end_engine, start_engine, swarm, wait_until


def test_stop_names_this_homes_engine_that_runs_as_another_host(tmp_path: Path) -> None:
    home = tmp_path / "home"
    engine = start_engine(home, SWARM_HOST_ID="host-a")
    try:
        wait_until(lambda: any((home / "run").glob(f"engine-{engine.pid}.ready")),
                   timeout=60, what="the engine's ready file")  # fmt: skip
        missed = swarm(home, "stop", timeout=60)
        assert missed.returncode == 0, missed.stderr
        assert missed.stdout.splitlines()[0] == "no engine is running on this host"
        assert (
            f"note: this home's engine (pid {engine.pid}) runs as host 'host-a':"
            " 'SWARM_HOST_ID=host-a swarm-engine stop' stops it"
        ) in missed.stderr
        assert engine.poll() is None  # (nothing was stopped)
        stopped = swarm(home, "stop", timeout=60, SWARM_HOST_ID="host-a")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert engine.wait(timeout=60) == 0
    finally:
        end_engine(engine)
