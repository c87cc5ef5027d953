"""The `swarm-engine` process's entry point: what it does before the CLI is imported.

Importing the CLI takes a few tenths of a second (click, then a command's modules: the
engine's, uvicorn's), before any handler of ours is in place. A stop signal then ended
`start --foreground`, `serve` or `run-ticket --wait` unsaid (SIGTERM: exit -15, SIGHUP:
-1), and a Ctrl-C gave any command a KeyboardInterrupt traceback from an import. So,
first of all, the long-running forms (`STOPPED`: `start`, either form, `serve`,
`run-ticket --wait`) take their stop signals: one before the command has taken them
itself ends it with its form's line and exit code (`start --foreground`: `engine stopped
(...) before it started`, exit 0; a daemonizing `start`: `error: start interrupted
(...): no engine was started`, exit 130; `run-ticket ID --wait`: `interrupted before
ticket ID was claimed: it is left as it was, not run`, exit 130); a second, while that is
said, does nothing (it raised again inside the first's handling: a traceback). The
command's own handler takes over from there (`signals.taken_signals`, which is handed
every signal this one got, also one whose `StopSignal` was dropped on the way: `start`
notes them until its loop runs, then relays them to it; the daemonizing `start` stops
the engine it spawned; `serve` notes them until uvicorn listens; `run-ticket --wait`
relays them to its loop, before its claim too). Once the command has ended, a stop
signal is ignored until the process exits (the interpreter's end put the defaults back:
a second Ctrl-C there killed it, exit -2). Any other command's Ctrl-C while it is
imported is `error: aborted`, exit 130. A signal ignored as the process starts (`nohup`,
a background job) stays ignored. A signal in the interpreter's own start-up, before this
module runs, does what its default does: nothing of ours runs yet. Only `sys` and
`signal` are imported here: a short command's start-up does not grow.
"""

from __future__ import annotations

import signal
import sys

TYPE_CHECKING = False  # (not `typing`'s: importing it here widens the window before `main`)
if TYPE_CHECKING:
    from collections.abc import Callable
    from sys import UnraisableHookArgs
    from types import FrameType
    from typing import NoReturn

EXIT_INTERRUPTED = 130
STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""The stop signals the forms of `STOPPED` take from the start."""
VALUED = frozenset({"--home", "--tickets-db", "--registry-db", "--config", "--log-level"})
"""The global options that take a value (as the next argument)."""
RUN_VALUED = frozenset({"--max-vms", "--backend"})
"""The options of `run-ticket` that take a value."""
START_VALUED = frozenset({"--max-vms", "--poll-interval", "--backend"})
"""The options of `start` that take a value."""
STOPPED = {
    "start --foreground": ("engine stopped ({how}) before it started", 0),
    "start": ("error: start interrupted ({how}): no engine was started", EXIT_INTERRUPTED),
    "serve": ("API stopped ({how}) before it served", 0),
    "run-ticket --wait": (
        "interrupted before {ticket} was claimed: it is left as it was, not run",
        EXIT_INTERRUPTED,
    ),
}
"""The forms that take their stop signals from the start, and what a stop signal before
the command has taken them ends it with: its line and exit code (a daemonizing `start` is
interrupted: exit 130, as later in its wait; `run-ticket --wait`: the line of a stop
before its claim, `cli/run.py`)."""


class StopSignal(BaseException):
    """A stop signal reached a form of `STOPPED` before it started anything (a
    BaseException, as KeyboardInterrupt: no `except Exception` takes it)."""

    def __init__(self, number: int) -> None:
        super().__init__(number)
        self.number = number


class EarlyStop:
    """The handler of the stop signals until the command takes them: the first raises
    `StopSignal`; later ones, and any once the command has taken its signals (`disarm`,
    called by `signals.taken_signals`; this handler is put back when it gives them back),
    do nothing: the stop is said already, or the command has done its own."""

    def __init__(self) -> None:
        self.armed = True
        self.got: list[int] = []
        self.raised: int | None = None
        """The signal it raised as `StopSignal`, if it did."""
        self.handed = False
        """The command has taken its signals over (`disarm`)."""

    def disarm(self) -> list[int]:
        """No more stops from here; returns the signals it got: when the command takes
        them over, any here were dropped on the way (raised inside an import's or a
        finalizer's callback, or while a module is compiled for an import, where Python
        prints or drops the exception and goes on) and are its to act on."""
        self.armed = False
        self.handed = True
        return self.got

    def cut_short(self) -> int | None:
        """The stop signal that an error escaping the command stands for, or None: one
        this handler raised before the command took its signals over. Raised inside a
        class being built (pydantic's schema building, `__set_name__`), `StopSignal` comes
        out wrapped in another error (`SchemaError`, `RuntimeError`), often with nothing
        left to chain it by; before the command has started anything, any error is the
        stop's doing."""
        return None if self.handed else self.raised

    def __call__(self, number: int, _: FrameType | None) -> None:
        self.got.append(number)
        if self.armed:
            self.armed = False
            self.raised = number
            raise StopSignal(number)


def command_of(argv: list[str]) -> str | None:
    """The command `argv` names (the first argument that is no global option or its
    value), or None."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in VALUED:
            skip = True
        elif not token.startswith("-"):
            return token
    return None


def form_of(argv: list[str]) -> str | None:
    """The form of `STOPPED` that `argv` runs (`start --foreground`, `run-ticket
    --wait`, ...), or None (a short command: it takes no stop signals here)."""
    command = command_of(argv)
    if command == "start":
        return "start --foreground" if _given("--foreground", argv, START_VALUED) else "start"
    if command == "run-ticket":
        return "run-ticket --wait" if _given("--wait", argv, RUN_VALUED) else None
    return command if command in STOPPED else None


def _given(flag: str, argv: list[str], valued: frozenset[str]) -> bool:
    """Whether `flag` is given as an option in `argv`: not as the value of an option
    (global ones, then the command's `valued`), nor after `--`."""
    skip, found = False, False
    for token in argv:
        if skip:
            skip = False
        elif token == "--":
            return False
        elif token == flag and found:
            return True
        elif token in (valued if found else VALUED):
            skip = True
        elif not found and not token.startswith("-"):
            found = True  # (the command)
    return False


def ticket_of(argv: list[str]) -> str:
    """`ticket N` for the ticket id a `run-ticket` command line `argv` gives (ASCII
    digits, at most 19: as the command says it, `007` as 7), or `its ticket` (an id that
    is none is the command's to refuse, never printed here)."""
    found, skip = False, False
    for token in argv:
        if skip:
            skip = False
        elif token in (RUN_VALUED if found else VALUED):
            skip = True
        elif token.startswith("-"):
            continue
        elif found:
            digits = token.isascii() and token.isdigit() and len(token) <= 19
            return f"ticket {int(token)}" if digits else "its ticket"
        else:
            found = True  # (the command)
    return "its ticket"


def quiet_stops(
    previous: Callable[[UnraisableHookArgs], object],
) -> Callable[[UnraisableHookArgs], object]:
    """`sys.unraisablehook` that drops a `StopSignal` and hands any other error on: a
    stop signal whose handler ran inside a finalizer (`__del__`, a weakref's callback,
    the garbage collector's) cannot be raised there, and Python printed it as `Exception
    ignored in: ...` with a traceback; that stop is noted (`EarlyStop.got`) and the
    command acts on it when it takes its signals."""

    def hook(unraisable: UnraisableHookArgs) -> object:
        if isinstance(unraisable.exc_value, StopSignal):
            return None
        return previous(unraisable)

    return hook


def main() -> None:
    """Run `swarm-engine` with the process's arguments; always ends in SystemExit."""
    argv = sys.argv[1:]
    form = form_of(argv)
    taken: list[signal.Signals] = []
    early = EarlyStop()
    try:
        if form is not None:  # (in the `try`: the first handler may raise as the next is set)
            sys.unraisablehook = quiet_stops(sys.unraisablehook)
            for sig in STOPS:
                if signal.getsignal(sig) != signal.SIG_IGN:
                    signal.signal(sig, early)
                    taken.append(sig)
        from swarm_engine.cli.main import main as run

        run()
    except StopSignal as stop:
        _stopped(form, argv, stop.number)
    except KeyboardInterrupt:  # (while the CLI is imported: after, it says so itself)
        if form is not None:  # (Python's own handler, before ours was set)
            _stopped(form, argv, signal.SIGINT)
        print("error: aborted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception:
        number = early.cut_short()
        if number is None:
            raise
        _stopped(form, argv, number)  # (the error is the stop's, wrapped: not shown)
    finally:
        early.disarm()
        # the command has said how it ended: a stop signal from here on, as the interpreter
        # ends (which puts the defaults back: they killed it, exit -2 or -15), is ignored
        for sig in taken:
            signal.signal(sig, signal.SIG_IGN)


def _stopped(form: str | None, argv: list[str], number: int) -> NoReturn:
    """End the process as a stop before the command started anything: its form's line
    (`STOPPED`) and exit code."""
    how = "Ctrl-C" if number == signal.SIGINT else signal.Signals(number).name
    line, code = STOPPED[form or ""]
    print(line.format(how=how, ticket=ticket_of(argv)), file=sys.stderr)
    sys.exit(code)
