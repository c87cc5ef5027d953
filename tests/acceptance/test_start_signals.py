"""Stop signals to `swarm-engine start --foreground`, at every moment of its life: two
quick Ctrl-C's ended it now and then killed by the second (exit -2: the default handler
back as the engine's loop closed, or as the interpreter ended) or with a traceback; it
ends with its last line and exit 0, whenever the two come."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from tests.support.cli import env_for, swarm, wait_until


def takes_its_signals(pid: int) -> bool:
    """The process has a handler of its own for SIGHUP (what the entry point installs
    last, as the process's first act): from here a signal is ours to handle."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # (gone: its end says the rest)
    caught = next(x for x in status.splitlines() if x.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGHUP - 1)))


FIRSTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.3)
"""When the first Ctrl-C comes, in seconds after the process took its signals: while it
imports the CLI, prepares, starts its engine's loop, runs."""
GAPS = (0.0, 0.002, 0.02)
"""How long after the first the second comes: within the first's handling, or its stop."""


def test_two_quick_ctrl_cs_end_a_foreground_engine_with_its_last_line(home: Path) -> None:
    """Many pairs of SIGINTs, at spacings that cross every phase of the engine's life;
    each run ends with exit 0 and its last line, whichever phase the pair hit."""
    assert swarm(home, "status", "--init").returncode == 0
    ends = []
    for first in FIRSTS:
        for gap in GAPS:
            engine = subprocess.Popen(
                [sys.executable, "-m", "swarm_engine", "start", "--foreground"],
                env=env_for(home),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            try:
                wait_until(partial(takes_its_signals, engine.pid), 60, "its handlers")
                time.sleep(first)  # sleep-ok: the spacing under test, not a wait
                engine.send_signal(signal.SIGINT)
                time.sleep(gap)  # sleep-ok: the spacing under test, not a wait
                if engine.poll() is None:
                    engine.send_signal(signal.SIGINT)
                out, err = engine.communicate(timeout=120)
            finally:
                if engine.poll() is None:
                    os.killpg(engine.pid, signal.SIGKILL)
                    engine.wait()
            ends.append((first, gap, engine.returncode, out, err))
    wrong = []
    for first, gap, code, out, err in ends:
        said = out.strip().splitlines()
        if said and said[0].startswith("engine starting: "):
            ended = said[-1] == "engine stopped after running 0 ticket(s)"
        else:
            ended = err.strip().splitlines()[-1:] == ["engine stopped (Ctrl-C) before it started"]
        if code != 0 or not ended or "Traceback" in err or "Exception ignored" in err:
            wrong.append((first, gap, code, out[-200:], err[-600:]))
    assert wrong == [], wrong
