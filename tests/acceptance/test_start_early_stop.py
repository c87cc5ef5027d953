"""A stop signal that reaches `start --foreground` while it says `engine starting`, before
its engine's loop has handlers of its own, is a stop like any other (`signals.py`): it
killed the engine unsaid (exit -15) once.

The engine is held in that window for sure, not by luck: its stdout is a pipe this test
filled beforehand, so `engine starting` blocks in `write` until the test reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tests.support.cli import env_for, wait_until
from tests.support.pipes import blocked_writing, full_pipe


@pytest.mark.parametrize(
    ("sig", "how"),
    [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C"), (signal.SIGHUP, "SIGHUP")],
)
def test_a_stop_while_the_engine_says_it_starts_stops_it_cleanly(
    home: Path, sig: signal.Signals, how: str
) -> None:
    read_end, write_end, held = full_pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", "start", "--foreground"],
        env=env_for(home),
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    os.close(write_end)
    errors: list[str] = []
    drain = threading.Thread(
        target=lambda: errors.append(proc.stderr.read() if proc.stderr else "")
    )
    drain.start()
    chunks: list[bytes] = []
    try:
        wait_until(lambda: blocked_writing(proc.pid), 60, "`engine starting` to block")
        assert proc.poll() is None
        proc.send_signal(sig)  # (a write interrupted by a noted signal goes on)
        reader = threading.Thread(
            target=lambda: chunks.extend(iter(lambda: os.read(read_end, 65536), b""))
        )
        reader.start()
        code = proc.wait(timeout=60)
        reader.join(timeout=60)
        drain.join(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(read_end)
        if proc.stderr is not None:
            proc.stderr.close()
    out = b"".join(chunks)[held:].decode()
    assert code == 0, (how, code, out, errors)
    lines = out.splitlines()
    assert lines[0].startswith("engine starting: "), out
    assert lines[-1] == "engine stopped after running 0 ticket(s)", out
    assert "Traceback" not in errors[0], errors
