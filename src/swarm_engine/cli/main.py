"""The `swarm-engine` command. Errors become one line on stderr and a documented exit code.

That includes click's own usage errors (a missing argument, a bad option value, an unknown
option or command, a command group given no command): one `error: ...` line with a hint
(`see 'swarm-engine ticket show --help'`) and exit 2, instead of click's usage block.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from swarm_engine import __version__
from swarm_engine.cli import unwritable
from swarm_engine.cli.app import PathName, example
from swarm_engine.cli.lazy import LazyGroup
from swarm_engine.cli.text import visible
from swarm_engine.errors import SwarmError

EXIT_INTERRUPTED = 130
COMMANDS = {
    "run-ticket": "swarm_engine.cli.run:run_ticket",
    "status": "swarm_engine.cli.run:status",
    "cleanup": "swarm_engine.cli.run:cleanup_cmd",
    "logs": "swarm_engine.cli.logs:logs",
    "db": "swarm_engine.cli.db:db",
    "ticket": "swarm_engine.cli.tickets:ticket",
    "agent": "swarm_engine.cli.registry_cmds:agent",
    "workflow": "swarm_engine.cli.registry_cmds:workflow",
    "start": "swarm_engine.cli.daemon:start",
    "stop": "swarm_engine.cli.stop:stop",
    "serve": "swarm_engine.cli.serve:serve",
    "vm": "swarm_engine.cli.vm:vm_group",
}
"""Every command, imported when it is used (cli/lazy.py): a short command's start-up
imports only what that command needs."""
WHERE_KEYS = frozenset({"tickets_db", "registry_db", "database_url", "registry_url", "host_id"})
"""The settings that say where the home's store and registry are and which host this is."""
TOLERANT: dict[str, frozenset[str]] = {
    "stop": WHERE_KEYS,
    "status": WHERE_KEYS,
    "cleanup": WHERE_KEYS | {"lease_ttl", "heartbeat_interval", "backend_options"},
}
"""The commands that go on past a broken config file (with a warning), and the settings
each reads from it (docs/cli.md, "A broken config file"): `stop` must stop an
engine started before the file was broken. Every other command, `start` and the engine
among them, refuses a broken file."""


class _Cli(LazyGroup):
    """The top group: a reader that quits (`| head -1`) ends any command quietly, exit 0,
    its output dropped (click itself would exit 1)."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _quiet_on_closed_pipe():  # (`--help` and `--version` print here)
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> object:
        with _quiet_on_closed_pipe():
            return super().invoke(ctx)


@contextlib.contextmanager
def _quiet_on_closed_pipe() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError as exc:
        unwritable.drop(exc, sys.stdout)
        raise click.exceptions.Exit(0) from None


@click.group(
    cls=_Cli,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=example(
        "swarm-engine ticket create --title hi --agent echo --input greeting=hello",
        "swarm-engine run-ticket 1 --wait",
    ),
)
@click.option(
    "--home",
    type=PathName(),
    help="Home folder [env SWARM_HOME; default ~/.local/share/swarm-engine].",
)
@click.option(
    "--tickets-db",
    type=PathName(),
    help="Ticket store [env SWARM_TICKETS_DB; default HOME/tickets.db].",
)
@click.option(
    "--registry-db",
    type=PathName(),
    help="Registry of agents and workflows [env SWARM_REGISTRY_DB; default HOME/registry.db].",
)
@click.option(
    "--config",
    "config_file",
    type=PathName(),
    metavar="FILE",
    help="Config file (TOML) [env SWARM_CONFIG; default HOME/config.toml].",
)
@click.option(
    "--log-level", metavar="LEVEL", help="Log level of engine logs (DEBUG, INFO, WARNING, ...)."
)
@click.version_option(__version__, package_name="swarm-engine")
@click.pass_context
def cli(
    ctx: click.Context,
    home: Path | None,
    tickets_db: Path | None,
    registry_db: Path | None,
    config_file: Path | None,
    log_level: str | None,
) -> None:
    """swarm-engine: tickets in, isolated agent runs out.

    Every ticket runs its agent (or each step of its workflow) in a fresh sandbox or
    microVM; every run and step is recorded in the ticket store.
    """
    from swarm_engine.config import load_settings_tolerant

    flags = {"home": home, "tickets_db": tickets_db, "registry_db": registry_db}
    keep = TOLERANT.get(ctx.invoked_subcommand or "", frozenset())
    settings, warning = load_settings_tolerant(keep, config_file, log_level=log_level, **flags)
    if warning:
        click.echo(f"warning: {one_line(warning)}", err=True)
    ctx.obj = settings  # each command makes or checks its home (cli/app.py: pass_settings)
    if log_level or settings.log_level != "WARNING":
        from swarm_engine.cli.logsetup import setup_logging

        setup_logging(settings.log_level)


def one_line(text: str) -> str:
    """`text` on one line: its non-blank lines, stripped, joined with ' / ', every control
    or bidi character left shown as `\\xNN` (`visible`): an error's message may carry a
    row's, an agent's or a step's text, and must not drive the terminal."""
    return visible(" / ".join(line.strip() for line in text.splitlines() if line.strip()))


def _command_path(argv: list[str]) -> str:
    """The command that `argv` names, as far as it can be told (`swarm-engine ticket list`):
    for errors click raises before it made the command's context."""
    command: click.Command = cli
    path = ["swarm-engine"]
    for token in argv:
        if not isinstance(command, click.Group):
            break
        sub = command.get_command(click.Context(command), token)
        if sub is not None:
            command = sub
            path.append(token)
    return " ".join(path)


def usage_error_line(exc: click.UsageError, argv: list[str]) -> str:
    """A click usage error as one `error:` line, e.g. `error: invalid value for 'ID': 'abc'
    is not a valid integer (see 'swarm-engine ticket show --help')`."""
    ctx = exc.ctx
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        if ctx is not None and isinstance(ctx.command, click.Group):
            message = f"missing command; one of: {', '.join(ctx.command.list_commands(ctx))}"
        else:
            message = "missing arguments"
    elif (
        type(exc) is click.BadParameter and exc.param is not None and _says_what_it_takes(exc.param)
    ):
        name = exc.param.get_error_hint(ctx) if ctx is not None else exc.param.human_readable_name
        message = f"{name.strip(chr(39))}: {exc.message}"  # `TICKET_ID: 'abc' is not a ticket id`
    else:
        message = " ".join(exc.format_message().split()).rstrip(".")
    if message[:1].isupper() and not message[1:2].isupper():
        message = message[0].lower() + message[1:]
    path = ctx.command_path if ctx is not None else _command_path(argv)
    return visible(f"error: {message} (see '{path} --help')")


def _says_what_it_takes(param: click.Parameter) -> bool:
    """An id or a number (`cli/app.py`): its line names the parameter and what it takes."""
    from swarm_engine.cli.app import Id, PathName, Seconds, Whole

    return isinstance(param.type, Id | Whole | Seconds | PathName)


def main(argv: list[str] | None = None) -> None:
    """Run the command `argv` (default: the process's arguments); always ends in SystemExit.

    Without `argv`, this is the process itself (the `swarm-engine` script, `python -m
    swarm_engine`), which ends with the command: on the way out every object is frozen
    (`gc.freeze`), so the interpreter's exit does not walk all that the imports made once
    more (7-20 ms of a short command; docs/benchmarks.md, "CLI start-up"). Callers that
    pass `argv` (tests, in-process) keep their collector as it was.
    """
    try:
        _main(argv)
    finally:
        if argv is None:
            gc.freeze()


def _main(argv: list[str] | None) -> None:
    # a stream closed as the process started (`>&-`) is None here: what goes to it is
    # dropped, as `print` drops it, not a traceback
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115
    unwritable.LOST.clear()  # (a command run in-process after another: its own output)
    unwritable.DONE.clear()
    code: object = 1
    try:
        code = cli.main(args=argv, prog_name="swarm-engine", standalone_mode=False)
        sys.stdout.flush()  # (what a pipe holds back meets a closed pipe here, not at exit)
    except SwarmError as exc:
        click.echo(f"error: {one_line(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        click.echo(usage_error_line(exc, sys.argv[1:] if argv is None else argv), err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {one_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError as exc:  # its reader is done (`| head`): not an error
        unwritable.drop(exc, sys.stdout)
        sys.exit(0)
    except OSError as exc:
        if exc.filename is not None or exc.errno not in _OUTPUT_ERRNOS:
            raise
        unwritable.drop(exc, sys.stdout)
    lost = unwritable.failure()
    if lost is not None:  # (the command went on without its output, or stopped at it)
        did = "".join(f"; {what}" for what in unwritable.DONE)
        click.echo(f"error: cannot write the output: {lost.strerror or lost}{did}", err=True)
        sys.exit(code if isinstance(code, int) and code != 0 else 1)  # (130 stays 130)
    sys.exit(code if isinstance(code, int) else 0)


_OUTPUT_ERRNOS = frozenset({errno.EIO, errno.EFBIG, errno.ENOSPC, errno.EDQUOT})
"""What a write to standard output meets behind `> file` on a full disk or quota
(`/dev/full`), or a failing device; a file the command itself opens would have its name
in the error."""
