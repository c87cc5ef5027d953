"""Live step logs: stored as the step prints, followed by `logs --follow`, on each store."""

from __future__ import annotations

import queue
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import Target
from tests.support.cli import env_for, start_engine, swarm, swarm_inproc
from tests.support.pipes import read_lines

FAST = {"SWARM_HEARTBEAT_INTERVAL": "0.3", "SWARM_POLL_INTERVAL": "0.5"}


@pytest.fixture
def home(store_target: Target, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", **store_target.env).returncode == 0
    return home


def register(home: Path, target: Target, folder: Path, yaml_text: str) -> None:
    folder.mkdir(parents=True)
    (folder / "agent.yaml").write_text(yaml_text)
    done = swarm_inproc(home, "agent", "register", str(folder), **target.env)
    assert done.returncode == 0, done.stderr


def lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """The process's stdout lines, as they come, read by a thread."""
    out: queue.Queue[str] = queue.Queue()
    read_lines(proc, out.put)
    return out


def wait_for_line(lines: queue.Queue[str], text: str, seen: list[str]) -> None:
    while not any(text in line for line in seen):
        seen.append(lines.get(timeout=60))


def test_follow_shows_lines_while_the_step_still_runs(
    home: Path, store_target: Target, tmp_path: Path
) -> None:
    register(home, store_target, tmp_path / "waits", """\
        name: waits
        kind: shell
        command: "echo first line; while [ ! -e go ]; do sleep 0.05; done; echo second line"
        """.replace("        ", ""))  # fmt: skip
    assert swarm_inproc(home, "ticket", "create", "--title", "w", "--agent", "waits",
                        **store_target.env).returncode == 0  # fmt: skip
    engine = start_engine(home, "--max-vms", "1", **store_target.env, **FAST)
    follower = subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", "logs", "1", "--follow"],
        env=env_for(home, **store_target.env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        lines, seen = lines_of(follower), []
        wait_for_line(lines, "first line", seen)
        # the step waits for the signal file: its second line cannot have been printed
        assert follower.poll() is None and not any("second line" in s for s in seen)
        assert store_target.rows("SELECT status FROM tickets")[0]["status"] == "running"
        workspace = store_target.rows("SELECT workspace FROM vms WHERE state = 'busy'")[0]
        (Path(workspace["workspace"]) / "go").write_text("")
        wait_for_line(lines, "second line", seen)
        assert follower.wait(timeout=60) == 0, seen  # it ends when the ticket ends
        assert store_target.rows("SELECT status FROM tickets")[0]["status"] == "done"
        assert "".join(seen).count("first line") == 1
    finally:
        for proc in (follower, engine):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def test_the_stored_log_is_the_file_and_as_bounded(
    home: Path, store_target: Target, tmp_path: Path
) -> None:
    register(home, store_target, tmp_path / "loud", """\
        name: loud
        kind: shell
        command: "seq 1 200000; echo the end"
        """.replace("        ", ""))  # fmt: skip
    assert swarm_inproc(home, "ticket", "create", "--title", "l", "--agent", "loud",
                        **store_target.env).returncode == 0  # fmt: skip
    done = swarm(home, "start", "--foreground", "--until-idle", timeout=120,
                 SWARM_MAX_LOG_BYTES="65536", **store_target.env, **FAST)  # fmt: skip
    assert done.returncode == 0, done.stderr
    [step] = store_target.rows("SELECT id, log_path FROM step_executions")
    chunks = store_target.rows(
        "SELECT data FROM step_logs WHERE step_execution_id = %(s)s ORDER BY id", s=step["id"]
    )
    stored = "".join(c["data"] for c in chunks)
    assert stored == Path(step["log_path"]).read_text()
    assert len(stored.encode()) <= 65536 and "bytes cut" in stored
    assert stored.startswith("1\n2\n") and stored.endswith("200000\nthe end\n")
    shown = swarm_inproc(home, "logs", "1", **store_target.env)
    assert shown.returncode == 0 and "the end" in shown.stdout


def test_a_step_stopped_by_its_timeout_stores_its_log_to_the_last_line(
    home: Path, store_target: Target, tmp_path: Path
) -> None:
    """A step that prints without end until its ticket's timeout stops it: the stored log
    holds what its `output.log` holds, its last lines too (a tester found the last one or
    two lines missing from the store, so from `logs` and the API, in 5 of 6 stops)."""
    register(home, store_target, tmp_path / "chatty", """\
        name: chatty
        kind: shell
        command: "i=0; while true; do echo line $i of a step that prints until stopped; i=$((i+1)); sleep 0.003; done"
        """.replace("        ", ""))  # fmt: skip
    made = swarm_inproc(home, "ticket", "create", "--title", "c", "--agent", "chatty",
                        "--timeout", "1.5", **store_target.env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    ran = swarm(home, "run-ticket", "1", "--wait", timeout=120, **store_target.env)
    assert ran.returncode != 0 and "timed out" in ran.stdout + ran.stderr, ran.stdout + ran.stderr
    (step,) = store_target.rows("SELECT id, log_path FROM step_executions")
    kept = Path(step["log_path"]).read_text()
    stored = "".join(
        r["data"]
        for r in store_target.rows(
            "SELECT data FROM step_logs WHERE step_execution_id = %(id)s ORDER BY id", id=step["id"]
        )
    )
    assert kept.count("\n") > 10  # (it printed for a while)
    assert stored == kept, (len(stored), len(kept), kept[len(stored) :][:200])
