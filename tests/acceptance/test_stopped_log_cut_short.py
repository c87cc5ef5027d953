"""A step stopped (the engine's abort) while another client holds the store's write lock:
the rest of its log cannot be stored within `STOPPED_SHIP_SECONDS`, so it is only in its
`output.log`. The stored log (`logs`, the API's download) then ends with one line that
says so and names the file, stored with the run's end once the store answers again. A
real SQLite store, held by another connection; a real engine."""

from __future__ import annotations

import queue
import signal
import subprocess
from pathlib import Path

from tests.acceptance.conftest import engine_ready, write_agent
from tests.support.api import start_api
from tests.support.cli import query, start_engine, swarm_inproc, wait_until, write_lock
from tests.support.pipes import read_lines

from swarm_engine.engine.logship import STOPPED_SHIP_SECONDS

BUSY = {"SWARM_BUSY_TIMEOUT": "0.2", "SWARM_HEARTBEAT_INTERVAL": "0.3"}
CHATTY = """\
name: chatty
kind: shell
command: "i=0; while true; do echo line $i of a step that prints until stopped; i=$((i+1)); sleep 0.003; done"
"""
GIVEN_UP = "the rest of its log is not stored, only in"
NOTE_START = "[swarm-engine: the step was stopped"


def stored_log(db: Path) -> str:
    return "".join(r["data"] for r in query(db, "SELECT data FROM step_logs ORDER BY id"))


def wait_for_line(lines: queue.Queue[str], text: str, seen: list[str], timeout: float = 60) -> bool:
    """Whether the engine said `text` within `timeout` seconds of its last line."""
    while not any(text in line for line in seen):
        try:
            seen.append(lines.get(timeout=timeout))
        except queue.Empty:
            return False
    return True


def test_a_stopped_steps_log_cut_short_by_a_held_store_ends_with_a_line_saying_so(
    tmp_path: Path, engines: list[subprocess.Popen[str]]
) -> None:
    home = tmp_path / "home"
    db = home / "tickets.db"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    assert swarm_inproc(home, "agent", "register", str(write_agent(tmp_path / "c", CHATTY)))
    made = swarm_inproc(home, "ticket", "create", "--title", "c", "--agent", "chatty")
    assert made.returncode == 0, made.stderr
    proc = start_engine(home, "--max-vms", "1", **BUSY)
    engines.append(proc)
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    engine_ready(home, proc)
    read_lines(proc, lines.put)
    wait_until(lambda: stored_log(db), 60, "the step's log to be stored")
    proc.send_signal(signal.SIGTERM)  # drain
    wait_for_line(lines, "draining", seen)
    with write_lock(db):  # held until the engine gave the rest of the log up
        # a rest to give up: the step prints past what the store took before the lock
        # (readers pass a write lock in WAL mode), then it is stopped
        taken = len(stored_log(db).encode())
        (kept_file,) = (home / "artifacts").glob("run-*/*/output.log")
        wait_until(lambda: kept_file.stat().st_size > taken + 1000, 60, "output past the store")
        proc.send_signal(signal.SIGTERM)  # abort: the step is stopped
        said = wait_for_line(lines, GIVEN_UP, seen, timeout=STOPPED_SHIP_SECONDS + 3)
        assert proc.poll() is None  # the abort's record waits for the store
    assert proc.wait(timeout=60) == 0
    while not lines.empty():
        seen.append(lines.get())
    out = "".join(seen)
    assert "Traceback" not in out, out
    (step,) = query(db, "SELECT status, log_path FROM step_executions")
    assert step["status"] == "cancelled" and step["log_path"], step
    kept = Path(step["log_path"]).read_text()
    stored = stored_log(db)
    assert NOTE_START in stored, stored[-300:]  # (before: the stored log just stopped)
    head, note = stored[: stored.rindex(NOTE_START)], stored[stored.rindex(NOTE_START) :]
    assert note == (
        "[swarm-engine: the step was stopped while the store was busy and the rest of its"
        f" log was not stored within {STOPPED_SHIP_SECONDS:g}s: the stored log may end early"
        f" here; the whole log is in {step['log_path']}]\n"
    )
    # the note on a line of its own: after the stored text, or a newline if that ended mid-line
    whole = kept.startswith(head) or (kept.startswith(head[:-1]) and kept[len(head) - 1] != "\n")
    assert head.endswith("\n") and whole, (len(head), len(kept))
    assert len(head) < len(kept)  # the rest is in the file only
    assert said, out  # and one warning line, naming the file

    shown = swarm_inproc(home, "logs", "1")
    assert shown.returncode == 0 and shown.stdout.count(note.strip()) == 1, shown.stdout[-500:]
    api = start_api(home)
    try:
        download = api.get("/v1/tickets/1/logs")
        assert download.status_code == 200 and note.strip() in download.text, download.text[-500:]
    finally:
        assert "Traceback" not in api.stop()
