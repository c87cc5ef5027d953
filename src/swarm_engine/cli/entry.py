"""The `swarm-engine` process's entry point: what it does before the CLI is imported.

Importing the CLI takes a few tenths of a second (click, then a command's modules: the
engine's, uvicorn's), before any handler of ours is in place. A stop signal then ended
`start --foreground` or `serve` unsaid (SIGTERM: exit -15, SIGHUP: -1), and a Ctrl-C gave
any command a KeyboardInterrupt traceback from an import. So, first of all, those two
commands take their stop signals (`STOPS`): one before the command has started anything
ends it with its stop line and exit 0 (the command's own handlers take over from there:
`start` notes them until its loop runs, `serve` until uvicorn listens); any other
command's Ctrl-C while it is imported is `error: aborted`, exit 130. A signal ignored as
the process starts (`nohup`, a background job) stays ignored. Only `sys` and `signal`
are imported here: a short command's start-up does not grow.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

EXIT_INTERRUPTED = 130
STOPS = {
    "start": (signal.SIGINT, signal.SIGTERM, signal.SIGHUP),  # (with --foreground)
    "serve": (signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
}
"""The commands that take their stop signals from the start, and which."""
VALUED = frozenset({"--home", "--tickets-db", "--registry-db", "--config", "--log-level"})
"""The global options that take a value (as the next argument)."""
STOPPED = {
    "start": "engine stopped ({how}) before it started",
    "serve": "API stopped ({how}) before it served",
}


class StopSignal(BaseException):
    """A stop signal reached `start --foreground` or `serve` before it started anything
    (a BaseException, as KeyboardInterrupt: no `except Exception` takes it)."""

    def __init__(self, number: int) -> None:
        super().__init__(number)
        self.number = number


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


def _stop(number: int, _: FrameType | None) -> None:
    raise StopSignal(number)


def main() -> None:
    """Run `swarm-engine` with the process's arguments; always ends in SystemExit."""
    argv = sys.argv[1:]
    command = command_of(argv)
    if command in STOPS and (command != "start" or "--foreground" in argv):
        for sig in STOPS[command]:
            if signal.getsignal(sig) != signal.SIG_IGN:
                signal.signal(sig, _stop)
    try:
        from swarm_engine.cli.main import main as run

        run()
    except StopSignal as stop:
        how = "Ctrl-C" if stop.number == signal.SIGINT else signal.Signals(stop.number).name
        print(STOPPED[command or ""].format(how=how), file=sys.stderr)
        sys.exit(0)
    except KeyboardInterrupt:  # (while the CLI is imported: after, it says so itself)
        print("error: aborted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
