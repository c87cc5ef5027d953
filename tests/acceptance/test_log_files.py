"""A step's `log_path` is a stored value: any writer of `tickets.db` may have put any path
there. `swarm-engine logs` and the API read a step's log file (a run recorded before logs
were stored) by one rule, `service.logs.log_file`: a regular file under the home's
`artifacts/`, at most 64 MiB of it; the CLI lists a step's artifacts only next to such a
file (docs/security.md)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from tests.support.api import start_api
from tests.support.cli import swarm

from swarm_engine.service.logs import MAX_FILE_BYTES


def _step(home: Path, ticket_id: int, log_path: str) -> None:
    """A draft ticket with one run and one step whose log is not stored, only named."""
    conn = sqlite3.connect(home / "tickets.db", timeout=30)
    try:
        with conn:
            conn.execute(
                "INSERT INTO tickets (id, title, status, agent_id) VALUES (?, 't', 'draft', 'echo')",
                (ticket_id,),
            )
            run = conn.execute(
                "INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, execution_mode,"
                " status) VALUES (?, 1, ?, 'single', 'done')",
                (ticket_id, f"a{ticket_id}"),
            ).lastrowid
            conn.execute(
                "INSERT INTO step_executions (run_id, step_id, agent_name, agent_version,"
                " agent_kind, status, log_path) VALUES (?, 'main', 'echo', '1.0.0', 'echo',"
                " 'done', ?)",
                (run, log_path),
            )
    finally:
        conn.close()


def test_logs_reads_no_file_outside_the_artifacts(home: Path, tmp_path: Path) -> None:
    """The tester's `log_path = '/etc/shadow'` (here a secret file next to the home, with
    siblings), a symlink under `artifacts/` to it, a FIFO there, and a 256 MiB sparse file
    outside: `logs` prints none of them, lists no artifact, and ends at once (exit 0)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "shadow").write_text("root:TOP-SECRET\n")
    (secrets / "neighbour").write_text("x")
    huge = secrets / "huge.log"
    with huge.open("wb") as f:
        f.truncate(256 * 1024**2)
    step_dir = home / "artifacts" / "run-1" / "main.1"
    step_dir.mkdir(parents=True)
    (step_dir / "link.log").symlink_to(secrets / "shadow")
    os.mkfifo(step_dir / "fifo.log")
    cases = {
        200: str(secrets / "shadow"),
        201: str(step_dir / "link.log"),
        202: str(step_dir / "fifo.log"),
        203: str(huge),
        204: str(home / "artifacts" / ".." / ".." / "secrets" / "shadow"),
    }
    for ticket_id, path in cases.items():
        _step(home, ticket_id, path)
    api = start_api(home)
    try:
        for ticket_id in cases:
            done = swarm(home, "logs", str(ticket_id), timeout=60)
            out = done.stdout + done.stderr
            assert done.returncode == 0, out
            assert "TOP-SECRET" not in out and "artifact:" not in out, out
            assert "neighbour" not in out and "Traceback" not in out, out
            assert len(out) < 4096, len(out)
            served = api.get(f"/v1/tickets/{ticket_id}/logs")
            assert served.status_code == 200 and "TOP-SECRET" not in served.text
    finally:
        api.stop()


def test_logs_reads_a_log_file_under_the_artifacts_bounded(home: Path) -> None:
    """A log file the engine wrote (under `artifacts/`) is printed, with its artifacts; a
    256 MiB one there (text, then a hole) is read to the API's bound (64 MiB), not into
    memory whole. (Text, because `logs` shows a NUL as `\\x00`: four characters a byte.)"""
    step_dir = home / "artifacts" / "run-1" / "main.1"
    step_dir.mkdir(parents=True)
    (step_dir / "output.log").write_text("hello from the step\n")
    (step_dir / "report.txt").write_text("r")
    big_dir = home / "artifacts" / "run-2" / "main.1"
    big_dir.mkdir(parents=True)
    with (big_dir / "output.log").open("wb") as f:
        f.write(b"x" * (MAX_FILE_BYTES + 1))
        f.truncate(256 * 1024**2)
    _step(home, 300, str(step_dir / "output.log"))
    _step(home, 301, str(big_dir / "output.log"))
    done = swarm(home, "logs", "300", check=True)
    assert "hello from the step" in done.stdout
    assert f"artifact: {step_dir / 'report.txt'}" in done.stdout
    big = swarm(home, "logs", "301", timeout=120)
    assert big.returncode == 0 and "MemoryError" not in big.stderr, big.stderr[-2000:]
    assert MAX_FILE_BYTES <= len(big.stdout) < MAX_FILE_BYTES + 4096
