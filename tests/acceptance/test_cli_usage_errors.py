"""Usage errors, click's own included, follow docs/cli.md: one `error:` line on stderr with
a hint, exit 2, nothing on stdout, nothing written. `--help` still works."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.cli import snapshot, swarm, swarm_inproc


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["ticket", "show", "abc"],
            "error: invalid value for 'TICKET_ID': 'abc' is not a valid integer range"
            " (see 'swarm-engine ticket show --help')",
        ),
        (
            ["ticket", "show"],
            "error: missing argument 'TICKET_ID' (see 'swarm-engine ticket show --help')",
        ),
        (
            ["ticket", "list", "--bogus"],
            "error: no such option '--bogus' (see 'swarm-engine ticket list --help')",
        ),
        (
            ["ticket", "list", "--status"],
            "error: option '--status' requires an argument (see 'swarm-engine ticket list --help')",
        ),
        (
            ["ticket", "list", "--limit", "many"],
            "error: invalid value for '--limit': 'many' is not a valid integer range"
            " (see 'swarm-engine ticket list --help')",
        ),
        (
            ["ticket", "show", "1", "2"],
            "error: got unexpected extra argument (2) (see 'swarm-engine ticket show --help')",
        ),
        (
            ["ticket", "frobnicate"],
            "error: no such command 'frobnicate' (see 'swarm-engine ticket --help')",
        ),
        (
            ["ticket"],
            "error: missing command; one of: cancel, create, list, open, reopen, show, steps"
            " (see 'swarm-engine ticket --help')",
        ),
        (["--bogus", "status"], "error: no such option '--bogus' (see 'swarm-engine --help')"),
        (["--home"], "error: option '--home' requires an argument (see 'swarm-engine --help')"),
    ],
)
def test_click_usage_errors_are_one_documented_line(home: Path, args: list[str], line: str) -> None:
    before = snapshot(home / "tickets.db"), snapshot(home / "registry.db")
    done = swarm_inproc(home, *args)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == line + "\n"
    assert (snapshot(home / "tickets.db"), snapshot(home / "registry.db")) == before


def test_an_unknown_command_suggests_close_ones(home: Path) -> None:
    done = swarm_inproc(home, "tickt")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: no such command 'tickt'. (Did you mean one of: 'run-ticket', 'ticket'?)"
        " (see 'swarm-engine --help')"
    ]


def test_no_command_at_all_lists_the_commands(home: Path) -> None:
    done = swarm(home)
    assert (done.returncode, done.stdout) == (2, "")
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: missing command; one of: agent, ")
    assert lines[0].endswith("(see 'swarm-engine --help')")


def test_the_real_process_prints_one_line_too(home: Path) -> None:
    done = swarm(home, "ticket", "show", "abc")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "error: invalid value for 'TICKET_ID': 'abc' is not a valid integer range"
        " (see 'swarm-engine ticket show --help')\n"
    )


@pytest.mark.parametrize("args", [["--help"], ["ticket", "--help"], ["ticket", "show", "-h"]])
def test_help_still_works(home: Path, args: list[str]) -> None:
    done = swarm_inproc(home, *args)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("Usage: swarm-engine")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["stop"], "--timeout"),
        (["start", "--foreground"], "--poll-interval"),
        (["ticket", "create", "--title", "t", "--agent", "echo"], "--timeout"),
    ],
)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_seconds_option_refuses_what_is_not_a_finite_number(
    home: Path, args: list[str], option: str, value: str
) -> None:
    """One option type (`cli/app.py` `Seconds`) for every option in seconds: the same line
    for each, nothing started or written."""
    before = snapshot(home / "tickets.db"), snapshot(home / "registry.db")
    done = swarm_inproc(home, *args, option, value)
    assert (done.returncode, done.stdout) == (2, "")
    command = " ".join(a for a in args if not a.startswith("-") and a not in ("t", "echo"))
    assert done.stderr == (
        f"error: invalid value for '{option}': '{value}' is not a finite number of seconds"
        f" (see 'swarm-engine {command} --help')\n"
    )
    assert (snapshot(home / "tickets.db"), snapshot(home / "registry.db")) == before
