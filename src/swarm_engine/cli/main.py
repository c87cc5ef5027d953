"""The `swarm-engine` command. Errors become one line on stderr and a documented exit code."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from swarm_engine.cli.app import ensure_home
from swarm_engine.cli.logsetup import setup_logging
from swarm_engine.config import load_settings
from swarm_engine.errors import SwarmError

EXIT_INTERRUPTED = 130


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--home", type=click.Path(path_type=Path), help="Home folder [env SWARM_HOME].")
@click.option(
    "--tickets-db", type=click.Path(path_type=Path), help="Ticket store [env SWARM_TICKETS_DB]."
)
@click.option(
    "--registry-db", type=click.Path(path_type=Path), help="Registry [env SWARM_REGISTRY_DB]."
)
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), help="Config file (TOML)."
)
@click.option("--log-level", help="Log level for engine logs (e.g. INFO, DEBUG).")
@click.version_option(package_name="swarm-engine")
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
    settings = load_settings(
        config_file, home=home, tickets_db=tickets_db, registry_db=registry_db, log_level=log_level
    )
    ctx.obj = settings
    if ctx.invoked_subcommand and "--help" not in sys.argv and "-h" not in sys.argv:
        ensure_home(settings)
    if log_level or settings.log_level != "WARNING":
        setup_logging(settings.log_level)


def _register() -> None:
    from swarm_engine.cli import registry_cmds, run, tickets

    cli.add_command(run.run_ticket)
    cli.add_command(run.status)
    cli.add_command(run.cleanup_cmd)
    cli.add_command(run.logs)
    cli.add_command(tickets.ticket)
    cli.add_command(registry_cmds.agent)
    cli.add_command(registry_cmds.workflow)
    try:
        from swarm_engine.cli import daemon

        cli.add_command(daemon.start)
        cli.add_command(daemon.stop)
    except ImportError:
        pass
    try:
        from swarm_engine.cli.vm import vm_group

        cli.add_command(vm_group)
    except ImportError:
        pass


_register()


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="swarm-engine", standalone_mode=False)
    except SwarmError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(code if isinstance(code, int) else 0)
