"""The `swarm-engine` process's entry point: what it does before the CLI is imported.

Importing the CLI takes a few tenths of a second (click, then a command's modules: the
engine's, uvicorn's), before any handler of ours is in place. A stop signal then ended
`start --foreground` or `serve` unsaid (SIGTERM: exit -15, SIGHUP: -1), and a Ctrl-C gave
any command a KeyboardInterrupt traceback from an import. So, first of all, those two
commands take their stop signals (`STOPS`): one before the command has taken them
itself ends it with its stop line, exit 0 (a daemonizing `start`: `error: start
interrupted (...): no engine was started`, exit 130); a second, while that is said, does
nothing (it raised again inside the first's handling: a traceback). The command's own
handler takes over from there (`signals.taken_signals`: `start` notes them until its
loop runs, then relays them to it; the daemonizing `start` stops the engine it spawned;
`serve` notes them until uvicorn listens). Once the command has ended, a stop signal is
ignored until the process exits (the interpreter's end put the defaults back: a second
Ctrl-C there killed it, exit -2). Any other command's Ctrl-C while it is imported is
`error: aborted`, exit 130. A signal ignored as the process starts (`nohup`, a
background job) stays ignored. A signal in the interpreter's own start-up, before this
module runs, does what its default does: nothing of ours runs yet. Only `sys` and
`signal` are imported here: a short command's start-up does not grow.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

EXIT_INTERRUPTED = 130
STOPS = {
    "start": (signal.SIGINT, signal.SIGTERM, signal.SIGHUP),  # (either form)
    "serve": (signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
}
"""The commands that take their stop signals from the start, and which."""
VALUED = frozenset({"--home", "--tickets-db", "--registry-db", "--config", "--log-level"})
"""The global options that take a value (as the next argument)."""
STOPPED = {
    "start --foreground": ("engine stopped ({how}) before it started", 0),
    "start": ("error: start interrupted ({how}): no engine was started", EXIT_INTERRUPTED),
    "serve": ("API stopped ({how}) before it served", 0),
}
"""What a stop signal before the command has taken its signals ends it with: its line and
exit code (a daemonizing `start` is interrupted: exit 130, as later in its wait)."""


class StopSignal(BaseException):
    """A stop signal reached `start` or `serve` before it started anything (a
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

    def disarm(self) -> list[int]:
        """No more stops from here; returns the signals it got: when the command takes
        them over, any here were dropped on the way (raised inside an import's or a
        finalizer's callback, which print an exception and go on) and are its to act on."""
        self.armed = False
        return self.got

    def __call__(self, number: int, _: FrameType | None) -> None:
        self.got.append(number)
        if self.armed:
            self.armed = False
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


def main() -> None:
    """Run `swarm-engine` with the process's arguments; always ends in SystemExit."""
    argv = sys.argv[1:]
    command = command_of(argv)
    taken: list[signal.Signals] = []
    early = EarlyStop()
    if command in STOPS:
        for sig in STOPS[command]:
            if signal.getsignal(sig) != signal.SIG_IGN:
                signal.signal(sig, early)
                taken.append(sig)
    try:
        from swarm_engine.cli.main import main as run

        run()
    except StopSignal as stop:
        how = "Ctrl-C" if stop.number == signal.SIGINT else signal.Signals(stop.number).name
        form = "start --foreground" if command == "start" and "--foreground" in argv else command
        line, code = STOPPED[form or ""]
        print(line.format(how=how), file=sys.stderr)
        sys.exit(code)
    except KeyboardInterrupt:  # (while the CLI is imported: after, it says so itself)
        print("error: aborted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        early.disarm()
        # the command has said how it ended: a stop signal from here on, as the interpreter
        # ends (which puts the defaults back: they killed it, exit -2 or -15), is ignored
        for sig in taken:
            signal.signal(sig, signal.SIG_IGN)
