"""`serve` stops within its bound while a log download waits for a SQLite lock another
client holds: the download's store call runs in a worker thread, which nothing can
cancel, and it waited out the whole busy timeout (an hour here) before the server could
exit. Now a call still waiting for a lock once the stop's drain is up gives up
(`Server.past_stop`): the download is answered 503 and the server stops, exit 0."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

from tests.support.api import start_api
from tests.support.cli import swarm_inproc, wait_until


def waits_for_a_lock(pid: int) -> bool:
    """A thread of `pid` sleeps in SQLite's busy handler (the server's other threads wait
    on epoll or a futex)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in threads:
        try:
            if "nanosleep" in Path(f"/proc/{pid}/task/{tid}/wchan").read_text():
                return True
        except OSError:
            continue
    return False


def test_a_download_waiting_for_a_locked_store_does_not_hold_the_stop(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    assert swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "echo").returncode == 0
    api = start_api(home, SWARM_BUSY_TIMEOUT="3600")
    # another client holds the store's file alone (a WAL reader waits only behind such a
    # lock; the server has no connection open yet, so it can be taken)
    locker = sqlite3.connect(home / "tickets.db", isolation_level=None, timeout=30)
    answers: list[object] = []
    try:
        locker.execute("PRAGMA locking_mode = EXCLUSIVE")
        locker.execute("BEGIN EXCLUSIVE")
        locker.execute("UPDATE tickets SET title = title")

        def download() -> None:
            try:
                answers.append(api.get("/v1/tickets/1/logs", timeout=120))
            except Exception as exc:  # (a dropped connection is an answer too)
                answers.append(exc)

        client = threading.Thread(target=download)
        client.start()
        wait_until(lambda: waits_for_a_lock(api.proc.pid), 60, "the download to wait")
        api.proc.send_signal(signal.SIGTERM)
        try:  # with the lock still held: the busy timeout is an hour
            code = api.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = None
        client.join(timeout=60)
    finally:
        locker.close()
        said = api.stop()
    assert code == 0, said
    assert said.rstrip().splitlines()[-1] == (
        "API stopped (SIGTERM): open requests were given their time to end"
    ), said
    assert "Traceback" not in said, said
    (answer,) = answers
    assert not isinstance(answer, Exception), answer
    assert answer.status_code == 503, answer.text  # type: ignore[attr-defined]
    assert answer.json()["error"] == "store_unavailable"  # type: ignore[attr-defined]
