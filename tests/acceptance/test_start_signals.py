"""Stop signals to `swarm-engine start`, at every moment of its life.

The daemonizing `start` waits for the engine it spawned to register: a SIGTERM or SIGHUP
then killed it and left the engine running, unsaid (a Ctrl-C stopped the engine). Each
of the three now stops the engine and waits for it to go, then one line, exit 130:
before the spawn, just after it, while the engine registers, while it waits for a busy
store. `start --foreground` given two quick Ctrl-C's ended now and then killed by the
second (exit -2: the default handler back as the engine's loop closed, or as the
interpreter ended) or with a traceback; it ends with its last line and exit 0, whenever
the two come."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
from tests.support.cli import env_for, swarm, wait_until

from swarm_engine.vm.proctree import pid_alive

SIGNALS = [(signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGHUP"), (signal.SIGINT, "Ctrl-C")]
HOLD_SPAWN = """\
import os, sys

if os.environ.pop("HOLD_SPAWN", None):  # (this process only: not the engine it spawns)
    spawn = os.posix_spawn

    def held(*args, **kwargs):
        pid = spawn(*args, **kwargs)
        os.write(2, f"spawned {pid}\\n".encode())
        os.read(0, 1)
        return pid

    os.posix_spawn = held
"""
"""A `sitecustomize` that holds `start` just after it has spawned its engine (before it
keeps the pid), in a read of a stdin pipe, until the test writes."""


def takes_its_signals(pid: int) -> bool:
    """The process has a handler of its own for SIGHUP (what the entry point installs
    last, as the process's first act): from here a signal is ours to handle."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # (gone: its end says the rest)
    caught = next(x for x in status.splitlines() if x.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGHUP - 1)))


def delivered(pid: int) -> bool:
    """No signal is pending for the process: one sent has reached its handler."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    pending = [x.split()[1] for x in status.splitlines() if x.startswith(("SigPnd:", "ShdPnd:"))]
    return all(int(x, 16) == 0 for x in pending)


def daemonizing_start(home: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", "start", "--max-vms", "1"],
        env=env_for(home, **env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def engine_pids(home: Path) -> list[int]:
    return [int(p.name.split("-")[1].split(".")[0]) for p in (home / "run").glob("engine-*.pid")]


def ended_interrupted(start: subprocess.Popen[str], engine: int) -> tuple[int, list[str]]:
    """`start` ended: its code and stderr lines; the engine it spawned is gone (killed
    here if not: the test fails then, leaving nothing behind)."""
    try:
        _, err = start.communicate(timeout=120)
    finally:
        left = pid_alive(engine)
        if left:
            os.kill(engine, signal.SIGKILL)
    assert not left, f"engine {engine} left running; start said: {err}"
    return start.returncode, err.strip().splitlines()


@pytest.mark.parametrize(("sig", "how"), SIGNALS)
def test_a_stop_while_start_waits_for_its_engine_to_register_stops_the_engine(
    home: Path, sig: signal.Signals, how: str
) -> None:
    assert swarm(home, "status", "--init").returncode == 0
    start = daemonizing_start(home)
    try:
        engine = wait_until(lambda: engine_pids(home), 120, "the engine's pid file")[0]
        start.send_signal(sig)
        code, lines = ended_interrupted(start, engine)
    finally:
        if start.poll() is None:
            start.kill()
            start.wait()
    assert code == 130, lines
    assert lines[-1] == (
        f"error: start interrupted ({how}): engine (pid {engine}) stopped before it had"
        f" started; log: {home / 'logs' / 'engine.log'}"
    ), lines
    assert engine_pids(home) == []


@pytest.mark.parametrize(("sig", "how"), SIGNALS)
def test_a_stop_just_after_the_spawn_stops_the_engine(
    home: Path, tmp_path: Path, sig: signal.Signals, how: str
) -> None:
    """Held right after `posix_spawn` returned, before the pid is kept: the signal is
    taken then, not lost with the pid."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD_SPAWN)
    assert swarm(home, "status", "--init").returncode == 0
    start = daemonizing_start(home, PYTHONPATH=str(hook), HOLD_SPAWN="1")
    assert start.stderr is not None and start.stdin is not None
    try:
        said = start.stderr.readline()
        assert said.startswith("spawned "), said
        engine = int(said.split()[1])
        start.send_signal(sig)
        wait_until(lambda: start.poll() is not None or delivered(start.pid), 60, "the signal")
        start.stdin.write("x")  # let go: the signal comes as the spawn's stretch ends
        start.stdin.flush()
        code, lines = ended_interrupted(start, engine)
    finally:
        if start.poll() is None:
            start.kill()
            start.wait()
    assert code == 130, lines
    assert lines[-1].startswith(
        f"error: start interrupted ({how}): engine (pid {engine}) stopped before it had started"
    ), lines


def test_a_stop_while_the_engine_waits_for_a_busy_store_stops_it(home: Path) -> None:
    assert swarm(home, "status", "--init").returncode == 0
    log = home / "logs" / "engine.log"
    lock = sqlite3.connect(home / "tickets.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    start = daemonizing_start(home, SWARM_BUSY_TIMEOUT="0.5")
    try:
        engine = wait_until(lambda: engine_pids(home), 120, "the engine's pid file")[0]
        wait_until(
            lambda: log.exists() and "store busy" in log.read_text(errors="replace"),
            120,
            "the engine to wait for the store",
        )
        start.send_signal(signal.SIGTERM)
        lock.execute("COMMIT")  # (the engine's own stop is not held up for the store)
        code, lines = ended_interrupted(start, engine)
    finally:
        lock.close()
        if start.poll() is None:
            start.kill()
            start.wait()
    assert code == 130, lines
    assert lines[-1].startswith(
        f"error: start interrupted (SIGTERM): engine (pid {engine}) stopped before it had started"
    ), lines


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
            wrong.append(
                f"first {first} gap {gap}: exit {code}\nstdout:\n{out[-1500:]}\nstderr:\n{err[-3000:]}"
            )
    if wrong:  # (whole: pytest's repr of a list cuts the middle of each item, where it failed)
        pytest.fail("\n\n".join(wrong), pytrace=False)
