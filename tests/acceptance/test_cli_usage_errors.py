"""Usage errors, click's own included, follow docs/cli.md: one `error:` line on stderr with
a hint, exit 2, nothing on stdout, nothing written. `--help` still works."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tests.support.cli import snapshot, swarm, swarm_inproc


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["ticket", "show", "abc"],
            "error: TICKET_ID: 'abc' is not a ticket id (a whole number)"
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
            "error: --limit: 'many' is not a whole number from 1 to 100000"
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
        # an empty path is not the current folder (`Path("")` is `.`: stores were made there)
        (
            ["--home", "", "ticket", "create", "--title", "x", "--agent", "echo"],
            "error: --home: '' is empty; leave it out for the default, or give a path"
            " (see 'swarm-engine --help')",
        ),
        (
            ["--tickets-db", " ", "status"],
            "error: --tickets-db: ' ' is empty; leave it out for the default, or give a path"
            " (see 'swarm-engine --help')",
        ),
        (
            ["agent", "register", ""],
            "error: [PATH]: '' is empty; leave it out for the default, or give a path"
            " (see 'swarm-engine agent register --help')",
        ),
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
        "error: TICKET_ID: 'abc' is not a ticket id (a whole number)"
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
    assert done.stderr.startswith(f"error: {option}: '{value}' is not a finite number of seconds")
    assert done.stderr.endswith(f" (see 'swarm-engine {command} --help')\n")
    assert (snapshot(home / "tickets.db"), snapshot(home / "registry.db")) == before


def _id_params() -> list[tuple[list[str], str, str]]:
    """Every (command path, parameter, what it is) that takes an id, found by walking the
    command tree: a command added later is checked without a list to keep in step."""
    from swarm_engine.cli.app import Id
    from swarm_engine.cli.main import cli

    found: list[tuple[list[str], str, str]] = []

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, [*path, name])
            return
        for param in command.params:
            if isinstance(param.type, Id):
                found.append((path, param.name or "", param.type.what))

    walk(cli, [])
    return found


ID_PARAMS = _id_params()


def _number_options() -> list[tuple[list[str], click.Option]]:
    """Every (command path, option) that takes a number other than an id (`Whole`,
    `Seconds`), found by walking the command tree; none takes click's own int or float."""
    from swarm_engine.cli.app import Seconds, Whole
    from swarm_engine.cli.main import cli

    found: list[tuple[list[str], click.Option]] = []

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, [*path, name])
        for param in command.params:
            kind = param.type
            if isinstance(kind, Whole | Seconds):
                assert isinstance(param, click.Option), (path, param.name)
                found.append((path, param))
            else:  # click's own numbers say "is not a valid integer range"
                assert not isinstance(
                    kind, click.types.IntParamType | click.types.FloatParamType
                ), (path, param.name, kind)

    walk(cli, [])
    return found


NUMBER_OPTIONS = _number_options()


def test_every_number_option_is_found() -> None:
    named = {(" ".join(path), o.opts[0]) for path, o in NUMBER_OPTIONS}
    assert {("ticket list", "--limit"), ("start", "--max-vms"), ("ticket create", "--priority"),
            ("ticket create", "--timeout"), ("stop", "--timeout"), ("serve", "--port")} <= named  # fmt: skip


NOT_PLAIN = [" 1", "1 ", "+1", "1\n", "1_0", "٣", "\uff13", "1e1"]
"""What `int()` or `float()` takes and an option does not: ASCII digits only (`-?[0-9]+`,
one `.` more in seconds), no sign but `-`, no space, `_`, exponent or other digits."""


@pytest.mark.parametrize(
    "bad", ["x", "1.5x", "", "0x10", "nan", "99999999999999999999999", *NOT_PLAIN]
)
@pytest.mark.parametrize(
    ("path", "option"),
    NUMBER_OPTIONS,
    ids=[f"{' '.join(p)}:{o.opts[0]}" for p, o in NUMBER_OPTIONS],
)
def test_a_bad_number_is_one_line_naming_the_option_and_what_it_takes(
    home: Path, path: list[str], option: click.Option, bad: str
) -> None:
    from swarm_engine.cli.app import Seconds

    args = [*path, *(["--foreground"] if path == ["start"] else []), option.opts[0], bad]
    before = snapshot(home / "tickets.db"), snapshot(home / "registry.db")
    done = swarm_inproc(home, *args)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    what = "a finite number of seconds" if isinstance(option.type, Seconds) else "a whole number"
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {option.opts[0]}: {bad!r} is not {what} "), lines
    assert "<=" not in lines[0] and "valid" not in lines[0], lines
    assert lines[0].endswith(f" (see 'swarm-engine {' '.join(path)} --help')"), lines
    assert (snapshot(home / "tickets.db"), snapshot(home / "registry.db")) == before


def test_every_command_taking_an_id_is_found() -> None:
    commands = {" ".join(path) for path, _, _ in ID_PARAMS}
    assert {"run-ticket", "logs", "ticket show", "ticket cancel", "ticket reopen"} <= commands
    assert {"ticket open", "ticket steps", "ticket list"} <= commands


@pytest.mark.parametrize(
    "bad",
    ["abc", "1.5", "", " ", "1e3", "0x10", "٣", "1_000", "99999999999999999999", "-" + "9" * 19,
     *NOT_PLAIN, " -1", "+0", "-1\n"],
)  # fmt: skip
@pytest.mark.parametrize(
    ("path", "name", "what"), ID_PARAMS, ids=[f"{' '.join(p)}:{n}" for p, n, _ in ID_PARAMS]
)
def test_a_bad_id_is_one_line_naming_the_parameter_and_what_an_id_is(
    home: Path, path: list[str], name: str, what: str, bad: str
) -> None:
    from swarm_engine.cli.main import cli

    command = cli
    for part in path:
        assert isinstance(command, click.Group)
        found = command.get_command(click.Context(command), part)
        assert found is not None
        command = found
    args = list(path)
    for param in command.params:  # the other ids: good ones
        if isinstance(param, click.Argument) and param.name != name:
            args.append("1")
    param = next(p for p in command.params if p.name == name)
    shown = param.opts[0] if isinstance(param, click.Option) else (param.metavar or name.upper())
    args += [param.opts[0], bad] if isinstance(param, click.Option) else ["--", bad]
    before = snapshot(home / "tickets.db"), snapshot(home / "registry.db")
    done = swarm_inproc(home, *args)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    out_of_range = bad.strip("-").isascii() and bad.strip("-").isdigit()
    said = "a whole number from -2^63 to 2^63-1" if out_of_range else "a whole number"
    assert done.stderr == (
        f"error: {shown}: {bad!r} is not a {what} ({said})"
        f" (see 'swarm-engine {' '.join(path)} --help')\n"
    )
    assert (snapshot(home / "tickets.db"), snapshot(home / "registry.db")) == before


@given(
    st.text(max_size=30)
    | st.integers().map(str)
    | st.from_regex(r"\s*[-+]{0,2}0*[0-9_]{0,21}\s*", fullmatch=True)
)
@example("0" * 5000 + "7")  # leading zeros: still 7
@example("9" * 5000)  # past int()'s digit limit: out of range, no traceback
@example("-9223372036854775808")
@example(" -9223372036854775808\n")  # int() takes it; an id does not
@example("+1")
def test_an_id_is_a_64_bit_whole_number_and_nothing_else(text: str) -> None:
    from swarm_engine.cli.app import TICKET_ID
    from swarm_engine.records import shown

    digits = text[1:] if text[:1] == "-" else text
    whole = digits != "" and all(c in "0123456789" for c in digits)
    significant = digits.lstrip("0") or "0"
    sign = text[:1] if text[:1] == "-" else ""
    number = int(sign + significant) if whole and len(significant) <= 4000 else None
    if number is not None and not -(2**63) <= number < 2**63:
        number = None
    try:
        got = TICKET_ID.convert(text, None, None)
    except click.BadParameter as exc:
        assert number is None, text
        assert exc.message.startswith(f"{shown(text, 40)} is not a ticket id (a whole number")
    else:
        assert got == number, text


def _plain(text: str, seconds: bool) -> bool:
    """Whether `text` is a number as the command line takes it: `-?[0-9]+` in ASCII (an
    option in seconds: one `.` more, with a digit on either side of it or both)."""
    digits = text.removeprefix("-")
    if seconds and digits.count(".") == 1:
        digits = digits.replace(".", "", 1) or "."
    return digits != "" and all(c in "0123456789" for c in digits)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=12) | st.from_regex(r"\s*[-+]?[0-9_.eE٣\uff13]{0,6}\s*", fullmatch=True))
@example("1 ")
@example("1\n")
@example("+5")
def test_a_number_not_in_ascii_digits_is_one_line_and_exit_2(home: Path, text: str) -> None:
    """Any text that is not `-?[0-9]+` in ASCII (seconds: with one `.`) is refused by an id
    (`ticket steps 1 --before`), a whole-number option (`ticket list --limit`) and an option
    in seconds (`stop --timeout`) alike: exit 2, one line, nothing on stdout."""
    if "\0" in text:
        text = text.replace("\0", "x")  # (no NUL reaches argv)
    for args, seconds in ((["ticket", "steps", "1", "--before"], False),
                          (["ticket", "list", "--limit"], False),
                          (["stop", "--timeout"], True)):  # fmt: skip
        if _plain(text, seconds):
            continue
        done = swarm_inproc(home, *args, text)
        assert (done.returncode, done.stdout) == (2, ""), (args, text, done.stderr)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: {args[-1]}: ")
