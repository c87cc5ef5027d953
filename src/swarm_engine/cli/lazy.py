"""A click group whose commands are imported when one is used, not when the CLI starts.

`swarm-engine ticket cancel 7` imports the ticket commands and what they need, not the
engine, the VM backends or the registry's loaders: start-up is most of a short command's
time (docs/benchmarks.md, "CLI start-up"). Listing the commands (`--help`, a usage error
that names them) imports them all, so help reads exactly as with eager registration.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click


class LazyGroup(click.Group):
    """A group with `lazy_commands`: `{name: "package.module:attribute"}`."""

    def __init__(
        self, *args: Any, lazy_commands: Mapping[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in self.lazy_commands:
            command = self._load(cmd_name)
            self.add_command(command, cmd_name)
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and self.get_command(ctx, args[0]) is None:
            # an unknown command: load them all, as click suggests ("did you mean") from those
            for name in self.list_commands(ctx):
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)

    def _load(self, name: str) -> click.Command:
        module_name, _, attribute = self.lazy_commands[name].partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command) or command.name != name:
            raise RuntimeError(f"{self.lazy_commands[name]} is not the command {name!r}")
        return command
