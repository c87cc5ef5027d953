"""Two stop signals to `serve` (Ctrl-C pressed twice, SIGTERM then Ctrl-C): one stop,
named by the first signal, with its one line, exit 0 and no traceback. Before, a second
SIGINT made uvicorn skip the app's shutdown, whose task was cancelled with a traceback
(starlette's lifespan `receive`), and the line named the last signal caught.

The server is held in its stop for sure, not by luck: at `--log-level INFO` its first
write after the first signal is uvicorn's `Shutting down`, to a stderr pipe this test
filled; the second signal comes while that write waits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tests.support.cli import env_for, wait_until
from tests.support.pipes import blocked_writing, fill

READY = b"Application startup complete."


@pytest.mark.parametrize(
    ("first", "second", "how"),
    [
        (signal.SIGINT, signal.SIGINT, "Ctrl-C"),
        (signal.SIGTERM, signal.SIGINT, "SIGTERM"),
        (signal.SIGINT, signal.SIGTERM, "Ctrl-C"),
    ],
)
def test_a_second_stop_signal_keeps_the_first_ones_clean_stop(
    home: Path, first: signal.Signals, second: signal.Signals, how: str
) -> None:
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", "--log-level", "INFO", "serve", "--port", "0"],
        env=env_for(home),
        stdout=subprocess.DEVNULL,
        stderr=write_end,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    said = b""
    chunks: list[bytes] = []
    reader = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: os.read(read_end, 65536), b""))
    )
    try:
        while READY not in said:  # (its pipe is drained until it serves)
            chunk = os.read(read_end, 65536)
            assert chunk, said.decode()
            said += chunk
        held = fill(write_end)
        os.close(write_end)
        write_end = -1
        proc.send_signal(first)
        wait_until(lambda: blocked_writing(proc.pid), 60, "`Shutting down` to block")
        assert proc.poll() is None
        proc.send_signal(second)  # (a write interrupted by a caught signal goes on)
        reader.start()
        code = proc.wait(timeout=60)
        reader.join(timeout=60)
    finally:
        if write_end >= 0:
            os.close(write_end)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if not reader.is_alive():
            os.close(read_end)
    err = (said + b"".join(chunks)[held:]).decode(errors="replace")
    assert code == 0, (code, err)
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last == f"API stopped ({how}): open requests were given their time to end", err


def test_a_sigint_ignored_as_serve_starts_stays_ignored(home: Path) -> None:
    """A background job of a non-interactive shell (scripts/demo.sh) starts with SIGINT
    ignored: so it stays, while the server starts and while it serves (uvicorn put its
    own handler in). A Ctrl-C and then a SIGTERM: the SIGTERM stops it (pending together,
    SIGINT is delivered first, and would have named the stop)."""
    read_end, write_end = os.pipe()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # (inherited through exec)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "swarm_engine", "--log-level", "INFO", "serve", "--port", "0"],
            env=env_for(home),
            stdout=subprocess.DEVNULL,
            stderr=write_end,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    os.close(write_end)
    said = b""
    try:
        while READY not in said:
            chunk = os.read(read_end, 65536)
            assert chunk, said.decode()
            said += chunk
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGTERM)
        said += b"".join(iter(lambda: os.read(read_end, 65536), b""))
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(read_end)
    err = said.decode(errors="replace")
    assert code == 0, (code, err)
    assert "Traceback" not in err, err
    assert err.splitlines()[-1].startswith("API stopped (SIGTERM): "), err
