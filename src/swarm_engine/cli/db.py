"""`swarm-engine db path`: where the databases are, for other SQLite clients."""

from __future__ import annotations

import click

from swarm_engine.cli.app import example, pass_existing
from swarm_engine.config import Settings


@click.group(epilog=example("sqlite3 \"$(swarm-engine db path)\" 'SELECT id, status FROM tickets'"))
def db() -> None:
    """The databases, for other SQLite clients (see docs/schema.md)."""


@db.command(
    "path",
    short_help="Print the ticket store's path (or the registry's).",
    epilog=example(
        'sqlite3 -cmd ".timeout 5000" "$(swarm-engine db path)" "INSERT INTO tickets (title, status, agent_id)'
        " VALUES ('hi', 'open', 'echo')\""
    ),
)
@click.option("--registry", is_flag=True, help="The registry (agents, workflows) instead.")
@pass_existing("tickets", "registry")
def db_path(settings: Settings, registry: bool) -> None:
    """Print the path of the ticket store (tickets.db), which must exist already; with
    `database_url` set, its URL (password hidden): `psql` takes it as it is."""
    from swarm_engine.cli.app import store_label

    click.echo(store_label(settings.registry_target if registry else settings.tickets_target))
