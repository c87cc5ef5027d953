"""A signal while `swarm-engine` is still importing its CLI, before any handler of the
command's own (`cli/entry.py`): `start --foreground` and `serve` end with their stop line,
exit 0 (a SIGTERM or SIGHUP ended them unsaid, -15 or -1), the daemonizing `start` with
`error: start interrupted (...): no engine was started`, exit 130; `run-ticket ID --wait`
says its ticket is left as it was, exit 130 (it too died unsaid), and so it does when the
signal comes later but still before its claim (while it opens its store, or makes its VM
backend ready); any other command's Ctrl-C is `error: aborted`, exit 130 (it was a
KeyboardInterrupt traceback from an import).

The process is held in that window for sure, not by luck: a `sitecustomize` on its
PYTHONPATH (run as the interpreter starts, before our code) holds the first import of
`click`, which only the CLI does, in a read of a stdin pipe this test never writes."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from tests.support.cli import env_for, query, swarm_inproc
from tests.support.pipes import HeldByStdin

HOLD = """\
import os, sys


class Hold:
    def find_spec(self, name, path=None, target=None):
        if name == HELD:
            sys.meta_path.remove(self)
            os.write(2, b"held\\n")
            os.read(0, 1)
        return None


sys.meta_path.insert(0, Hold())
"""
UNCLAIMED = "interrupted before ticket 1 was claimed: it is left as it was, not run"


def hold_at(tmp_path: Path, module: str) -> Path:
    """A folder for PYTHONPATH whose `sitecustomize` holds the process at its first
    import of `module` (until a byte comes on its stdin)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(f"HELD = {module!r}\n{HOLD}")
    return hook


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
        (["run-ticket", "1", "--wait"], signal.SIGTERM, 130, UNCLAIMED),
        (["run-ticket", "--max-vms", "2", "1", "--wait"], signal.SIGINT, 130, UNCLAIMED),
        (["run-ticket", "1", "--wait"], signal.SIGHUP, 130, UNCLAIMED),
    ],
)
def test_a_signal_while_the_cli_is_imported(
    home: Path, tmp_path: Path, args: list[str], sig: signal.Signals, code: int, line: str
) -> None:
    env = env_for(home, PYTHONPATH=str(hold_at(tmp_path, "click")))
    with HeldByStdin(args, env) as held:
        proc = held.proc
        assert proc.stderr is not None
        assert proc.stderr.readline() == b"held\n"  # (waits in its read of stdin)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err.decode().splitlines(), out) == (code, [line], b"")


@pytest.mark.parametrize(
    "module",
    [
        "swarm_engine.engine.session",  # the CLI loaded, its store not open yet
        "swarm_engine.vm.process",  # its VM backend being made ready
    ],
)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_run_ticket_wait_before_its_claim(
    home: Path, tmp_path: Path, module: str, sig: signal.Signals
) -> None:
    made = swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "echo")
    assert made.returncode == 0, made.stderr
    env = env_for(home, PYTHONPATH=str(hold_at(tmp_path, module)))
    with HeldByStdin(["run-ticket", "1", "--wait"], env) as held:
        proc = held.proc
        assert proc.stderr is not None
        assert proc.stderr.readline() == b"held\n"  # (waits in its read of stdin)
        proc.send_signal(sig)  # noted, not acted on, until the hold lets it go on
        held.release()
        out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err.decode().splitlines(), out) == (130, [UNCLAIMED], b"")
    (ticket,) = query(home / "tickets.db", "SELECT status, attempts FROM tickets")
    assert ticket == {"status": "open", "attempts": 0}
    assert query(home / "tickets.db", "SELECT id FROM workflow_runs") == []


DROP = """\
import os, sys


class Drop:
    def find_spec(self, name, path=None, target=None):
        if name == "click":
            sys.meta_path.remove(self)
            os.write(2, b"held\\n")
            try:
                os.read(0, 1)
            except BaseException:  # dropped, as CPython drops one raised while it compiles
                pass
        return None


sys.meta_path.insert(0, Drop())
"""
"""A `sitecustomize` that holds the first import of `click` and drops whatever a signal's
handler raises meanwhile (CPython drops an exception a handler raises while it compiles
a module for an import: a stale or missing `.pyc`)."""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_whose_exception_was_dropped_still_stops_run_ticket_wait(
    home: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    # the command went on as if no signal had come: it ran its ticket to the end, exit 0
    made = swarm_inproc(home, "ticket", "create", "--title", "t", "--agent", "echo")
    assert made.returncode == 0, made.stderr
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(DROP)
    with HeldByStdin(["run-ticket", "1", "--wait"], env_for(home, PYTHONPATH=str(hook))) as held:
        proc = held.proc
        assert proc.stderr is not None
        assert proc.stderr.readline() == b"held\n"  # (waits in its read of stdin)
        proc.send_signal(sig)  # its StopSignal is raised in the read, and dropped there
        out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err.decode().splitlines(), out) == (130, [UNCLAIMED], b"")
    (ticket,) = query(home / "tickets.db", "SELECT status, attempts FROM tickets")
    assert ticket == {"status": "open", "attempts": 0}
