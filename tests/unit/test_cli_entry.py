"""`cli/entry.py`: which command a process's arguments name, before click is imported."""

from __future__ import annotations

import signal
import subprocess
import sys

import click
import pytest

from swarm_engine.cli.entry import (
    RUN_VALUED,
    START_VALUED,
    EarlyStop,
    StopSignal,
    command_of,
    form_of,
    ticket_of,
)
from swarm_engine.signals import taken_signals


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["start", "--foreground"], "start"),
        (["--home", "serve", "serve"], "serve"),  # a home named `serve`
        (["--log-level", "INFO", "--config", "c.toml", "status"], "status"),
        (["--home=/h", "ticket", "list"], "ticket"),
        (["--version"], None),
        ([], None),
    ],
)
def test_the_command_is_the_first_argument_that_is_no_global_option(
    argv: list[str], command: str | None
) -> None:
    assert command_of(argv) == command


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["run-ticket", "7", "--wait"], "ticket 7"),
        (["--home", "run-ticket", "run-ticket", "--wait", "12"], "ticket 12"),
        (["run-ticket", "--max-vms", "3", "--backend", "qemu", "4", "--wait"], "ticket 4"),
        (["run-ticket", "--wait", "--json", "5"], "ticket 5"),
        (["run-ticket", "\x1b[2J", "--wait"], "its ticket"),  # never printed as given
        (["run-ticket", "٣", "--wait"], "its ticket"),
        (["run-ticket", "--wait"], "its ticket"),
        (["run-ticket", "007", "--wait"], "ticket 7"),
        (["run-ticket", "9" * 5000, "--wait"], "its ticket"),  # (no 5000-digit line)
    ],
)
def test_the_ticket_a_stop_before_the_claim_names(argv: list[str], said: str) -> None:
    assert ticket_of(argv) == said


@pytest.mark.parametrize(
    ("argv", "form"),
    [
        (["start", "--foreground"], "start --foreground"),
        (["--home", "h", "start"], "start"),
        (["serve", "--port", "0"], "serve"),
        (["run-ticket", "--max-vms", "2", "1", "--wait"], "run-ticket --wait"),
        (["run-ticket", "1"], None),  # (queues it: a short command)
        (["--home", "--wait", "run-ticket", "1"], None),  # a home named `--wait`
        (["run-ticket", "1", "--max-vms", "--wait"], None),  # (a value click refuses)
        (["run-ticket", "--", "--wait"], None),  # (after `--`: an id, refused)
        (["start", "--backend", "--foreground"], "start"),
        (["start", "--poll-interval", "1", "--foreground"], "start --foreground"),
        (["--config", "--foreground", "start"], "start"),
        (["status"], None),
        ([], None),
    ],
)
def test_the_forms_that_take_their_stop_signals_first(argv: list[str], form: str | None) -> None:
    assert form_of(argv) == form


@pytest.mark.parametrize(
    ("command", "valued"), [("start", START_VALUED), ("run-ticket", RUN_VALUED)]
)
def test_the_options_said_to_take_a_value_are_the_commands_own(
    command: str, valued: frozenset[str]
) -> None:
    from swarm_engine.cli.main import cli

    found = cli.get_command(click.Context(cli), command)
    assert found is not None
    taking = {
        name
        for param in found.params
        if isinstance(param, click.Option) and not param.is_flag and param.nargs == 1
        for name in param.opts
    }
    assert taking == valued


def test_a_stop_whose_exception_was_dropped_is_the_commands_to_act_on() -> None:
    # CPython drops the exception a handler raises while it compiles a module for an
    # import: the command went on as if no signal had come (it ran its ticket, exit 0)
    early = EarlyStop()
    found = signal.signal(signal.SIGUSR1, early)
    try:
        with pytest.raises(StopSignal):
            signal.raise_signal(signal.SIGUSR1)  # raised, and (say) dropped on the way
        with taken_signals([signal.SIGUSR1]) as taken:
            signal.raise_signal(signal.SIGUSR1)  # the command's now: noted only
            assert taken.noted == [signal.SIGUSR1, signal.SIGUSR1]
        assert signal.getsignal(signal.SIGUSR1) is early  # put back, disarmed
        signal.raise_signal(signal.SIGUSR1)  # (raises nothing: the command has ended)
    finally:
        signal.signal(signal.SIGUSR1, found)


FINALIZED_STOP = """
import signal, sys
from swarm_engine.cli.entry import EarlyStop, quiet_stops
early = EarlyStop()
signal.signal(signal.SIGINT, early)
sys.unraisablehook = quiet_stops(sys.unraisablehook)
class Finalized:
    def __del__(self):
        signal.raise_signal(signal.SIGINT)  # its handler runs here, inside the finalizer
        sum(range(1000))
class Failing:
    def __del__(self):
        raise ValueError("another finalizer's error")
Finalized()
print("noted", early.disarm(), flush=True)
Failing()
"""


def test_a_stop_signal_inside_a_finalizer_is_noted_not_printed() -> None:
    """A Ctrl-C whose handler ran inside a finalizer (Python cannot raise it there) was
    printed as `Exception ignored in: ...` with a traceback, at a foreground engine's
    start (seen once in a loaded CI run); it is noted for the command, and said by nothing
    but the command's own lines. Any other finalizer's error is still printed."""
    done = subprocess.run(
        [sys.executable, "-c", FINALIZED_STOP], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"noted [{int(signal.SIGINT)}]\n"
    assert "StopSignal" not in done.stderr and "Finalized" not in done.stderr, done.stderr
    assert "ValueError: another finalizer's error" in done.stderr


WRAPPED_STOP = """
import signal, sys
import swarm_engine.cli.main as cli_main
def run(argv=None):
    class Slot:
        def __set_name__(self, owner, name):
            signal.raise_signal(signal.SIGINT)  # its handler runs here, as a class is built
            sum(range(100))
    class Model:  # (as pydantic builds a model while the CLI loads)
        x = Slot()
cli_main.main = run
sys.argv = ["swarm-engine", *sys.argv[1:]]
from swarm_engine.cli.entry import main
main()
"""


@pytest.mark.parametrize(
    ("argv", "line", "code"),
    [
        (["serve"], "API stopped (Ctrl-C) before it served", 0),
        (["start", "--foreground"], "engine stopped (Ctrl-C) before it started", 0),
        (["run-ticket", "7", "--wait"], "interrupted before ticket 7 was claimed", 130),
    ],
)
def test_a_stop_signal_wrapped_in_another_error_is_the_stop_it_was(
    argv: list[str], line: str, code: int
) -> None:
    """A Ctrl-C whose handler ran while a class was built (pydantic's models as the CLI
    loads) came out wrapped (`RuntimeError: Error calling __set_name__ ...`, pydantic's
    `SchemaError`): a traceback and exit 1 (a tester, 9 of 1,400 early signals). Before
    the command has taken its signals, it ends as the stop it was."""
    done = subprocess.run(
        [sys.executable, "-c", WRAPPED_STOP, *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == code, done.stderr
    assert done.stderr.startswith(line) and done.stderr.count("\n") == 1, done.stderr


STOP_WHILE_TAKING = """
import signal, sys
real = signal.signal
def signal_then_raised(sig, handler):  # a Ctrl-C comes just as the entry takes SIGINT
    previous = real(sig, handler)
    if sig == signal.SIGINT and callable(handler):
        signal.raise_signal(signal.SIGINT)
        sum(range(100))  # (its handler runs here, between the entry's two `signal` calls)
    return previous
signal.signal = signal_then_raised
sys.argv = ["swarm-engine", "serve"]
from swarm_engine.cli.entry import main
main()
"""


def test_a_stop_signal_while_the_entry_takes_its_handlers_is_a_stop() -> None:
    """A Ctrl-C handled between the entry's own `signal.signal` calls (its first handler
    set, the next being set) raised `StopSignal` outside the entry's `try`: a traceback,
    exit 1 (a tester, 3 of 3,300 signals at 20-30 ms). It is the stop it was."""
    done = subprocess.run(
        [sys.executable, "-c", STOP_WHILE_TAKING], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stderr) == (0, "API stopped (Ctrl-C) before it served\n")
