"""SIGHUP to `start --foreground` and `serve`: a stop like SIGTERM (its terminal closed),
unless the process was started with it ignored (`nohup`): then it stays ignored for the
process's whole life. Before, the engine's loop turned a SIGHUP ignored under `nohup`
back on (the engine stopped), and `serve` ended unsaid on any SIGHUP (exit -1).

Whether a process ignores a signal is read from the kernel (`SigIgn` in
/proc/PID/status), at moments the test holds the process at or waits for: an ignored
signal is dropped as it is sent, so nothing is left to chance."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.cli import env_for, wait_until
from tests.support.pipes import HeldStart, blocked_writing, full_pipe
from tests.support.sigmask import catches, ignores

NOHUP = shutil.which("nohup")
SERVING = b"serving the API on "
STARTED = b"Application startup complete."


@pytest.mark.skipif(NOHUP is None, reason="no nohup command")
def test_start_foreground_under_nohup_ignores_sighup_for_its_whole_life(home: Path) -> None:
    """Held at its `engine starting` line (a full stdout pipe: stop signals are noted
    there, before the loop has handlers), then once its engine is ready (the loop's
    handlers in): SIGHUP is ignored at both, SIGINT and SIGTERM are caught. A SIGHUP then
    a SIGTERM: one stop (a drain, no abort), exit 0."""
    assert NOHUP is not None
    start = HeldStart(home, NOHUP)
    pid = start.proc.pid
    try:
        wait_until(lambda: blocked_writing(pid), 60, "`engine starting` to block")
        noted = [catches(pid, s) for s in (signal.SIGINT, signal.SIGTERM)]
        assert (ignores(pid, signal.SIGHUP), noted) == (True, [True, True])
        start.release()
        ready = home / "run" / f"engine-{pid}.ready"
        wait_until(ready.exists, 60, "the engine to be ready")
        assert start.proc.poll() is None
        handled = [catches(pid, s) for s in (signal.SIGINT, signal.SIGTERM)]
        assert (ignores(pid, signal.SIGHUP), handled) == (True, [True, True])
        start.proc.send_signal(signal.SIGHUP)  # (dropped by the kernel: it is ignored)
        start.proc.send_signal(signal.SIGTERM)
        code, out, err = start.ended()
    finally:
        start.close()
    assert code == 0, (code, out, err)
    assert out.splitlines()[-1] == "engine stopped after running 0 ticket(s)", out
    assert err.count("stopping: draining") == 1, err
    assert "aborting" not in err and "Traceback" not in err, err


def serve(home: Path, *wrapper: str) -> tuple[subprocess.Popen[bytes], int, bytes]:
    """`serve --port 0` (under `wrapper`), read until uvicorn's handlers are in (its
    `Application startup complete.`, at INFO): the process, the read end of its stderr,
    what it said so far."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [*wrapper, sys.executable, "-m", "swarm_engine", "--log-level", "INFO", "serve",
         "--port", "0"],
        env=env_for(home),
        stdout=subprocess.DEVNULL,
        stderr=write_end,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    os.close(write_end)
    said = b""
    try:
        while STARTED not in said:
            chunk = os.read(read_end, 65536)
            assert chunk, said.decode()
            said += chunk
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        os.close(read_end)
        raise
    return proc, read_end, said


def ended(proc: subprocess.Popen[bytes], read_end: int, said: bytes) -> tuple[int, str]:
    """Its exit code and all it said on stderr, once it ends."""
    try:
        said += b"".join(iter(lambda: os.read(read_end, 65536), b""))
        return proc.wait(timeout=60), said.decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(read_end)


def test_sighup_stops_serve_as_sigterm_does(home: Path) -> None:
    proc, read_end, said = serve(home)
    assert catches(proc.pid, signal.SIGHUP)
    proc.send_signal(signal.SIGHUP)
    code, err = ended(proc, read_end, said)
    assert code == 0, (code, err)
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last == "API stopped (SIGHUP): open requests were given their time to end", err


def test_a_stop_at_its_ready_line_stops_serve_as_a_server(home: Path) -> None:
    """Held in the write of its `serving the API on` line (a full stderr pipe), a SIGHUP
    is the server's stop: its one line after the ready line, not the entry point's `API
    stopped (SIGHUP) before it served` (the ready line was said before the server's
    handlers were in)."""
    read_end, write_end, held = full_pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", "serve", "--port", "0"],
        env=env_for(home),
        stdout=subprocess.DEVNULL,
        stderr=write_end,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    os.close(write_end)
    try:
        wait_until(lambda: blocked_writing(proc.pid), 60, "its ready line to block")
        assert proc.poll() is None
        proc.send_signal(signal.SIGHUP)  # (a write interrupted by a noted signal goes on)
        code, err = ended(proc, read_end, b"")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lines = err[held:].splitlines()
    assert code == 0, (code, lines)
    assert lines[0].startswith(SERVING.decode()), lines
    assert lines[1:] == ["API stopped (SIGHUP): open requests were given their time to end"]


@pytest.mark.skipif(NOHUP is None, reason="no nohup command")
def test_serve_under_nohup_ignores_sighup_for_its_whole_life(home: Path) -> None:
    """Serving, it ignores SIGHUP (uvicorn's handlers in); a SIGHUP then a SIGTERM: the
    SIGTERM stops it, and names the stop (pending together, SIGHUP would come first)."""
    assert NOHUP is not None
    proc, read_end, said = serve(home, NOHUP)
    assert ignores(proc.pid, signal.SIGHUP) and catches(proc.pid, signal.SIGTERM)
    proc.send_signal(signal.SIGHUP)
    proc.send_signal(signal.SIGTERM)
    code, err = ended(proc, read_end, said)
    assert code == 0, (code, err)
    assert "Traceback" not in err, err
    assert err.splitlines()[-1].startswith("API stopped (SIGTERM): "), err
