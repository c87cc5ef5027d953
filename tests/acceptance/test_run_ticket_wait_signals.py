"""A stop signal to `run-ticket ID --wait` once its run is over and its event loop has
closed (while it prints its summary, or as the interpreter ends): it has nothing left to
stop, so it is ignored and the command ends as its run did. Its loop's own handlers put
the defaults back as the loop closed: a SIGTERM there killed it unsaid (exit -15), a
SIGHUP too (-1), a Ctrl-C gave `error: aborted` in place of its summary.

The process is held in that window for sure: a `sitecustomize` on its PYTHONPATH wraps
`asyncio.run` so that, once it has returned (its loop closed), the process waits in a read
of a stdin pipe until the test writes."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from tests.support.cli import env_for, query, swarm_inproc
from tests.support.pipes import HeldByStdin

HOLD_AFTER_LOOP = """\
import os

if os.environ.pop("HOLD_AFTER_LOOP", None):
    import asyncio

    run = asyncio.run

    def held(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        finally:
            os.write(2, b"loop closed\\n")
            os.read(0, 1)

    asyncio.run = held
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_after_run_ticket_waits_loop_closed_is_ignored(
    home: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    made = swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "echo")
    assert made.returncode == 0, made.stderr
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD_AFTER_LOOP)
    env = env_for(home, PYTHONPATH=str(hook), HOLD_AFTER_LOOP="1")
    with HeldByStdin(["run-ticket", "1", "--wait"], env, text=True) as held:
        proc = held.proc
        assert proc.stderr is not None
        before = []
        while (line := proc.stderr.readline()) not in ("loop closed\n", ""):
            before.append(line)
        assert line == "loop closed\n", before
        proc.send_signal(sig)  # the run is over: nothing to stop
        held.release()
        out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (0, ""), (out, before)
    assert out.splitlines()[-2].startswith("ticket 1 done"), out
    (ticket,) = query(home / "tickets.db", "SELECT status FROM tickets")
    assert ticket == {"status": "done"}
