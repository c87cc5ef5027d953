"""What every command shares: settings in `ctx.obj`, and opening the two databases."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from swarm_engine.cli.text import visible
from swarm_engine.errors import StoreError, UsageError
from swarm_engine.records import shown

if TYPE_CHECKING:  # imported where used: a command imports only what it needs
    from swarm_engine.config import Settings
    from swarm_engine.registry import Registry
    from swarm_engine.store import Store

F = TypeVar("F", bound=Callable[..., Any])
Database = Literal["tickets", "registry"]
INIT_HINT = "'swarm-engine status --init' creates it"


def wait_for_store(settings: Settings, *, first: float = 0.5, most: float = 15.0) -> None:
    """Until the ticket store and the registry answer, when a database server holds them
    (`start` and `serve`: a store not up yet at start-up is a delay, not a failure). One
    line on stderr when it does not (`waiting for the store at URL (why); retrying`),
    then retries, waiting `first` s and twice as long each time up to `most`, until it
    answers or the user stops the process. A server that answers and refuses (a wrong
    password, no such database) is not waited for: `StoreError`, as for every command.
    SQLite files are opened by the command itself."""
    import time

    from swarm_engine.errors import StoreUnreachableError
    from swarm_engine.store import is_url, open_database

    said: set[str] = set()
    for target, schema in ((settings.tickets_target, "tickets"),
                           (settings.registry_target, "registry")):  # fmt: skip
        delay = first
        while isinstance(target, str) and is_url(target):
            try:
                open_database(target, schema, busy_timeout=settings.busy_timeout).close()
                break
            except StoreUnreachableError as exc:
                if exc.where not in said:
                    said.add(exc.where)
                    click.echo(f"waiting for the store at {exc.where} ({exc.reason});"
                               " retrying (Ctrl-C stops)", err=True)  # fmt: skip
                time.sleep(delay)
                delay = min(delay * 2, most)


def ensure_home(settings: Settings) -> None:
    """Create the home folder and both databases (the first command that writes does).
    Creating a new database says so on stderr (`note: created a new, empty store at
    PATH`, and `... registry at PATH` for a registry outside a new home), so a typo in
    --home, SWARM_DATABASE_URL or SWARM_REGISTRY_URL is seen at once. A `sqlite:///` URL's
    file is made, never its folder: `StoreError` when that folder does not exist
    (`url_folder_problem`). Database files that exist already are left to the command
    that uses them (opening one brings its schema up to date): a short command opens only
    what it needs."""
    target = settings.tickets_target
    registry_target = settings.registry_target
    new = isinstance(target, Path) and not target.exists()
    new_registry = (
        isinstance(registry_target, Path)
        and not registry_target.exists()
        and registry_target != target
        and not (new and registry_target == settings.home / "registry.db")  # a new home's
    )
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the home {settings.home}: {exc.strerror}") from exc
    if all(isinstance(t, Path) and t.exists() for t in (target, registry_target)):
        return
    problem = url_folder_problem(settings)
    if problem:
        raise StoreError(problem)
    from swarm_engine.registry import Registry
    from swarm_engine.store import open_store

    open_store(settings.tickets_target, busy_timeout=settings.busy_timeout).close()
    Registry(
        settings.registry_target, settings.packages_dir, busy_timeout=settings.busy_timeout
    ).close()
    # the paths come from --home or the environment: escaped as every `error:` line is
    if new:
        click.echo(f"note: created a new, empty store at {visible(str(target))}", err=True)
    if new_registry:
        shown = visible(str(registry_target))
        click.echo(f"note: created a new, empty registry at {shown}", err=True)


def url_folder_problem(settings: Settings) -> str | None:
    """Why a `sqlite:///` URL in `database_url` or `registry_url` cannot be created, or
    None: its file is made when missing, but not the folders above it. A mistyped URL
    (`sqlite:////tmp/x/r.db`, `sqlite:///nonexistent/dir/x.db`) would otherwise make
    folders anywhere, even at the file system's root, and an empty database in them.
    (`--tickets-db` and `--registry-db` paths, like the home, get their folders made.)"""
    from swarm_engine.store import redact

    for setting, url in (
        ("database_url (SWARM_DATABASE_URL)", settings.database_url),
        ("registry_url (SWARM_REGISTRY_URL)", settings.registry_url),
    ):
        if url is None or not url.startswith("sqlite:///"):
            continue
        path = Path(url.removeprefix("sqlite://"))
        if not path.exists() and not path.parent.is_dir():
            return (
                f"{setting} {redact(url)}: no folder {path.parent} (a typo in the URL?);"
                " create the folder first (swarm-engine makes the database file of a"
                " sqlite:/// URL, never its folders)"
            )
    return None


def require_home(settings: Settings, needs: tuple[Database, ...]) -> None:
    """Make sure the databases a command reads exist, without making a new store by mistake.

    A home folder that does not exist (a typo in --home or SWARM_HOME) is an error; so is
    a folder with other things in it but not the database. A folder that exists and is
    empty (`mktemp -d`) is set up, with a note on stderr: nothing can be lost or hidden.
    """
    paths = {"tickets": settings.tickets_target, "registry": settings.registry_target}
    # a server database (postgresql://) is created by its migrations when first opened
    files = [path for name in needs if isinstance(path := paths[name], Path)]
    missing = [path for path in files if not path.exists()]
    if not missing:
        return
    home = settings.home
    if home.is_dir() and not any(home.iterdir()):
        ensure_home(settings)  # says so on stderr
        return
    if not home.exists():
        raise StoreError(
            f"no swarm-engine home at {home} (a typo in --home or SWARM_HOME?); {INIT_HINT}"
        )
    raise StoreError(f"no database at {missing[0]}; {INIT_HINT}")


def _passing(prepare: Callable[[Settings], None]) -> Callable[[F], F]:
    def decorator(f: F) -> F:
        @click.pass_context
        def new_func(ctx: click.Context, /, *args: Any, **kwargs: Any) -> Any:
            from swarm_engine.config import Settings

            settings = ctx.find_object(Settings)
            if settings is None:
                raise RuntimeError("no settings in the click context")
            prepare(settings)
            return ctx.invoke(f, settings, *args, **kwargs)

        return functools.update_wrapper(new_func, f)  # type: ignore[return-value]

    return decorator


pass_settings = _passing(ensure_home)
"""For commands that add to the store: the first one creates the home and both databases."""


def wait_then_ensure(settings: Settings) -> None:
    """`ensure_home` for a long-running command (`start`): a database server not up yet
    is waited for first (`wait_for_store`)."""
    wait_for_store(settings)
    ensure_home(settings)


pass_settings_unprepared = _passing(lambda settings: None)
"""The settings alone, for `start`: it checks what must come before anything is made
(its open-file limit), then calls `wait_then_ensure` itself."""


def store_label(target: str | Path) -> str:
    """Where a database is, fit to print: its path, or its URL without the password."""
    from swarm_engine.store import redact

    return redact(target) if isinstance(target, str) else str(target)


def example(*commands: str) -> str:
    """A command's help epilog: `Example:` and the command lines, kept as written."""
    return "\b\nExample:\n" + "\n".join(f"  {c}" for c in commands)


def pass_existing(*needs: Database) -> Callable[[F], F]:
    """For commands that read (or change what is there): the home must exist already."""
    return _passing(lambda settings: require_home(settings, needs or ("tickets",)))


@contextmanager
def store_of(settings: Settings) -> Iterator[Store]:
    from swarm_engine.store import open_store

    store = open_store(settings.tickets_target, busy_timeout=settings.busy_timeout)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def registry_of(settings: Settings) -> Iterator[Registry]:
    from swarm_engine.registry import Registry

    registry = Registry(
        settings.registry_target, settings.packages_dir, busy_timeout=settings.busy_timeout
    )
    try:
        yield registry
    finally:
        registry.close()


_WHOLE = re.compile(r"(-?)0*([0-9]{1,20})", re.ASCII)
"""A whole number in ASCII digits, `-?[0-9]+` and nothing else: no `+`, no space or line
break around it (`' 1'`, `'1\\n'`), no `_` (`1_0`), no other script's digits (`'٣'`), all of
which `int()` takes. At most 20 digits after leading zeros: a longer one is out of range
anyway, and is never handed to `int`."""
_DECIMAL = re.compile(r"(-?)(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
"""A number of seconds in plain decimal: ASCII digits with at most one `.` (`1`, `0.5`,
`.5`, `2.`), a `-` only where the range takes negatives. No `+`, space, `_`, exponent
(`1e3`), `nan`/`inf` or other script's digits, all of which `float()` takes."""


class Id(click.ParamType[int]):
    """An id (a ticket's, a run's, a step's): any 64-bit integer, as a row's id can hold,
    in ASCII digits with an optional `-` (`_WHOLE`). Anything else is one line naming the parameter and what an id is (`TICKET_ID: 'abc'
    is not a ticket id (a whole number)`, cli/main.py), not click's `is not a valid
    integer range` or its range in `<=x<=` form."""

    name = "integer"
    LEAST, MOST = -(2**63), 2**63 - 1

    def __init__(self, what: str) -> None:
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            whole = _WHOLE.fullmatch(str(value))
            if whole is None:
                self.fail(f"{shown(value, 40)} is not a {self.what} (a whole number)", param, ctx)
            number = int(whole[1] + whole[2])
        if not self.LEAST <= number <= self.MOST:
            self.fail(
                f"{shown(str(value), 40)} is not a {self.what} (a whole number from -2^63 to"
                " 2^63-1)",
                param,
                ctx,
            )
        return number


TICKET_ID = Id("ticket id")
"""A ticket id: any 64-bit integer, as a row's id can hold (the store numbers from 1, but
any client may write 0 or a negative id; such a ticket runs and is listed, so every
command addresses it: `swarm-engine ticket show -5`, through `IdCommand`)."""
RUN_ID = Id("run id")
"""A run id (`--run`, `ticket runs --before`): any 64-bit integer, as a ticket id is (any
client may write run -5: every command addresses them and pages through them)."""
STEP_ID = Id("step id")
"""A step id (`ticket steps --before`): any 64-bit integer, as a run id is."""


class IdCommand(click.Command):
    """A command whose one argument is a `TICKET_ID`: a negative id is taken as that
    argument wherever it stands (`ticket show -5 --json`), not as an unknown option (a
    token that is an option's value, `--cursor -5`, stays one)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not any(isinstance(p, click.Argument) and p.type is TICKET_ID for p in self.params):
            return super().parse_args(ctx, args)
        valued = {
            name
            for p in self.params
            if isinstance(p, click.Option) and not p.is_flag and not p.count
            for name in p.opts
        }
        kept: list[str] = []
        ids: list[str] = []
        for i, token in enumerate(args):
            if token == "--":
                kept += args[i:]
                break
            negative = token[:1] == "-" and token[1:].isascii() and token[1:].isdigit()
            if negative and not (kept and kept[-1] in valued):
                ids.append(token)
            else:
                kept.append(token)
        if ids:
            kept += [] if "--" in kept else ["--"]
            kept += ids
        return super().parse_args(ctx, kept)


def _figure(bound: float) -> str:
    named = {-(2**63): "-2^63", 2**63 - 1: "2^63-1"}
    if isinstance(bound, int) and bound in named:
        return named[bound]
    if isinstance(bound, float) and bound.is_integer():
        return str(int(bound))
    return str(bound)


def _range(least: float | None, most: float | None) -> str:
    if least is not None and most is not None:
        return f" from {_figure(least)} to {_figure(most)}"
    if least is not None:
        return f" of at least {_figure(least)}"
    return "" if most is None else f" of at most {_figure(most)}"


class Whole(click.IntRange):
    """A whole number within a range: the type of every integer option (`--limit`,
    `--max-vms`, `--priority`, `--port`, ...), in ASCII digits (`_WHOLE`; a `-` only
    where the range takes negatives). Anything else, or a number out of the
    range, is one line naming the option and what it takes (`--limit: 'x' is not a
    whole number from 1 to 100`, cli/main.py), not click's `is not a valid integer
    range` or its range in `<=x<=` form."""

    name = "integer range"  # (its metavar in --help, as before)

    def __init__(self, least: int, most: int) -> None:
        super().__init__(least, most)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number: int | None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            whole = _WHOLE.fullmatch(str(value))
            negative = whole is not None and whole[1] and self.min is not None and self.min >= 0
            number = None if whole is None or negative else int(whole[1] + whole[2])
        least, most = self.min, self.max
        if (
            number is None
            or (least is not None and number < least)
            or (most is not None and number > most)
        ):
            self.fail(
                f"{shown(str(value), 40)} is not a whole number{_range(least, most)}", param, ctx
            )
        return number


INT64 = Whole(-(2**63), 2**63 - 1)


class PathName(click.Path):
    """A path given on the command line. An empty or blank one is refused (one line naming
    the option: `--home: '' is empty; ...`), not read as the current folder (as
    `Path("")` is)."""

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail(
                f"{value!r} is empty; leave it out for the default, or give a path",
                param,
                ctx,
            )
        return super().convert(value, param, ctx)


class Seconds(click.FloatRange):
    """A finite number of seconds (no nan, no inf) within a range, in plain decimal
    (`_DECIMAL`): the type of every option given in seconds. Anything else is one line naming the option and what it
    takes (`--timeout: 'nan' is not a finite number of seconds from 0.001 to 31536000`,
    cli/main.py)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        what = f"a finite number of seconds{_range(self.min, self.max)}"
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        else:
            plain = _DECIMAL.fullmatch(str(value))
            negative = plain is not None and plain[1] and self.min is not None and self.min >= 0
            number = math.nan if plain is None or negative else float(str(value))
        if not math.isfinite(number):
            self.fail(f"{shown(str(value), 40)} is not {what}", param, ctx)
        if (self.min is not None and number < self.min) or (
            self.max is not None and number > self.max
        ):
            self.fail(f"{shown(str(value), 40)} is not {what}", param, ctx)
        return number


def parse_inputs(pairs: tuple[str, ...], inputs_json: str | None) -> dict[str, Any]:
    """--inputs-json '{...}' and --input KEY=VALUE pairs (VALUE parsed as JSON if it can be).

    A key given twice (two --input pairs, an --input and --inputs-json, or twice within
    --inputs-json's object, at any depth) is a UsageError: one of them would be dropped."""
    from swarm_engine.records import strict_json

    inputs: dict[str, Any] = {}
    if inputs_json is not None:
        try:
            loaded = strict_json(inputs_json, unique_keys=True)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"--inputs-json is not valid JSON: {exc.msg} (column {exc.colno})"
            ) from exc
        except ValueError as exc:
            raise UsageError(f"--inputs-json is not valid JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise UsageError("--inputs-json must be a JSON object")
        inputs.update(loaded)
    from_json = set(inputs)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--input {pair!r} must look like KEY=VALUE")
        if key in inputs:
            where = "in --input and in --inputs-json" if key in from_json else "twice in --input"
            raise UsageError(f"input {key!r} is given {where}; give each key once")
        try:
            inputs[key] = strict_json(value)
        except ValueError:  # not JSON (or NaN, 1e999): the text as it is
            inputs[key] = value
    return inputs
