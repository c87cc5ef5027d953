"""`cli/entry.py`: which command a process's arguments name, before click is imported."""

from __future__ import annotations

import pytest

from swarm_engine.cli.entry import command_of


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
