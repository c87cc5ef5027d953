"""A stop signal that reaches `start --foreground` while it says `engine starting`, before
its engine's loop has handlers of its own, is a stop like any other (`signals.py`): it
killed the engine unsaid (exit -15) once.

The engine is held in that window for sure, not by luck: its stdout is a pipe this test
filled beforehand, so `engine starting` blocks in `write` until the test reads."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from tests.support.cli import wait_until
from tests.support.pipes import HeldStart, blocked_writing


@pytest.mark.parametrize(
    ("sig", "how"),
    [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C"), (signal.SIGHUP, "SIGHUP")],
)
def test_a_stop_while_the_engine_says_it_starts_stops_it_cleanly(
    home: Path, sig: signal.Signals, how: str
) -> None:
    start = HeldStart(home)
    try:
        wait_until(lambda: blocked_writing(start.proc.pid), 60, "`engine starting` to block")
        assert start.proc.poll() is None
        start.proc.send_signal(sig)  # (a write interrupted by a noted signal goes on)
        code, out, err = start.ended()
    finally:
        start.close()
    assert code == 0, (how, code, out, err)
    lines = out.splitlines()
    assert lines[0].startswith("engine starting: "), out
    assert lines[-1] == "engine stopped after running 0 ticket(s)", out
    assert "Traceback" not in err, err
