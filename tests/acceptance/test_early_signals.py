"""A signal while `swarm-engine` is still importing its CLI, before any handler of the
command's own (`cli/entry.py`): `start --foreground` and `serve` end with their stop line,
exit 0 (a SIGTERM or SIGHUP ended them unsaid, -15 or -1), the daemonizing `start` with
`error: start interrupted (...): no engine was started`, exit 130; any other command's
Ctrl-C is `error: aborted`, exit 130 (it was a KeyboardInterrupt traceback from an
import).

The process is held in that window for sure, not by luck: a `sitecustomize` on its
PYTHONPATH (run as the interpreter starts, before our code) holds the first import of
`click`, which only the CLI does, in a read of a stdin pipe this test never writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.cli import env_for

HOLD = """\
import os, sys


class Hold:
    def find_spec(self, name, path=None, target=None):
        if name == "click":
            sys.meta_path.remove(self)
            os.write(2, b"held\\n")
            os.read(0, 1)
        return None


sys.meta_path.insert(0, Hold())
"""


@pytest.mark.parametrize(
    ("args", "sig", "code", "line"),
    [
        (
            ["start", "--foreground"],
            signal.SIGTERM,
            0,
            "engine stopped (SIGTERM) before it started",
        ),
        (["start", "--foreground"], signal.SIGHUP, 0, "engine stopped (SIGHUP) before it started"),
        (["start", "--foreground"], signal.SIGINT, 0, "engine stopped (Ctrl-C) before it started"),
        # the daemonizing `start`: interrupted, exit 130, as later in its wait (a SIGTERM
        # or SIGHUP ended it unsaid, a Ctrl-C was `error: aborted`)
        (
            ["start"],
            signal.SIGTERM,
            130,
            "error: start interrupted (SIGTERM): no engine was started",
        ),
        (["start"], signal.SIGHUP, 130, "error: start interrupted (SIGHUP): no engine was started"),
        (["start"], signal.SIGINT, 130, "error: start interrupted (Ctrl-C): no engine was started"),
        (["serve", "--port", "0"], signal.SIGTERM, 0, "API stopped (SIGTERM) before it served"),
        (["serve", "--port", "0"], signal.SIGINT, 0, "API stopped (Ctrl-C) before it served"),
        (["serve", "--port", "0"], signal.SIGHUP, 0, "API stopped (SIGHUP) before it served"),
        (["status"], signal.SIGINT, 130, "error: aborted"),
    ],
)
def test_a_signal_while_the_cli_is_imported(
    home: Path, tmp_path: Path, args: list[str], sig: signal.Signals, code: int, line: str
) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD)
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm_engine", *args],
        env=env_for(home, PYTHONPATH=str(hook)),
        stdin=read_end,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    os.close(read_end)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline() == b"held\n"  # (waits in its read of stdin)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(write_end)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert (proc.returncode, err.decode().splitlines(), out) == (code, [line], b"")
