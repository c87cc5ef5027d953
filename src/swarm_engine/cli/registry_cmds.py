"""`swarm-engine agent ...` and `swarm-engine workflow ...`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from swarm_engine.cli.app import (
    PathName,
    Whole,
    example,
    pass_existing,
    pass_settings,
    registry_of,
    store_of,
)
from swarm_engine.cli.output import (
    Col,
    Markup,
    ago,
    console,
    emit_json,
    emit_yaml,
    err_console,
    ms,
    plain,
    short,
    styled,
    table,
    usage_line,
    visible,
)
from swarm_engine.config import Settings
from swarm_engine.models import AgentSpec, WorkflowSpec
from swarm_engine.records import escaped_name
from swarm_engine.registry.listing import MAX_PAGE_DEFINITIONS, DefinitionPage
from swarm_engine.service import registry as service
from swarm_engine.service.registry import definition_folders
from swarm_engine.service.runs import of_workflow

VERSION_WIDTH = 33
"""A stored version in a list, cut to the longest a definition can have (`VERSION_RE`,
32) and a mark: any SQLite client may have stored one thousands of characters long."""


@click.group(epilog=example("swarm-engine agent list"))
def agent() -> None:
    """Register and inspect agents."""


@agent.command("register", epilog=example("swarm-engine agent register --all examples/agents"))
@click.argument("path", required=False, type=PathName())
@click.option(
    "--all",
    "all_dir",
    type=PathName(),
    metavar="DIR",
    help="Every agent package (folder with an agent.yaml) under DIR.",
)
@click.option("--force", is_flag=True, help="Replace an existing name@version.")
@pass_settings
def agent_register(
    settings: Settings, path: Path | None, all_dir: Path | None, force: bool
) -> None:
    """Register an agent package (a folder with agent.yaml), or all under --all DIR.

    All or nothing: if one definition is invalid, none is registered. One registered
    already with the same definition and files is accepted (its files copied to this
    host): `agent NAME@VERSION already registered, identical`.
    """
    folders = definition_folders(path, all_dir, "agent.yaml")
    identical: set[str] = set()
    with registry_of(settings) as registry:
        stored = service.register_agent_files(registry, folders, force=force, identical=identical)
    for spec in stored:  # (a package's folder named: every file in it reaches the VM)
        line = (
            f"agent {spec.ref} already registered, identical"
            if spec.ref in identical
            else f"registered agent {spec.ref} ({spec.kind})"
        )
        if spec.package_path is not None:
            line += f", its folder's files copied to {visible(spec.package_path)}"
        click.echo(line)  # (never wrapped: a path stays one piece)
    if path is not None and path.name != "agent.yaml" and not path.is_dir():
        shown = visible(str(path))
        click.echo(
            f"note: {shown} is no agent.yaml: its definition alone is registered, no package"
            " (only the folder of an agent.yaml is copied into the VM)",
            err=True,
        )


def paging(what: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """`--limit N` and `--cursor C` of a list of definitions."""

    def wrap(command: Callable[..., None]) -> Callable[..., None]:
        command = click.option(
            "--cursor",
            metavar="C",
            help=f"The next page of {what}, as the last page said.",
        )(command)
        return click.option(
            "--limit",
            type=Whole(1, MAX_PAGE_DEFINITIONS),
            default=MAX_PAGE_DEFINITIONS,
            show_default=True,
            metavar="N",
            help=f"At most this many {what} (by name and version).",
        )(command)

    return wrap


CANNOT_RUN = Col("cannot run", flex=True, min=16)
"""The column of a list that flags rows that can never run (`cannot_run`: an unknown
kind, a step's agent not registered, ...), shown only when a row of the page has one: a
list of runnable definitions reads as it always did."""


def _flagged(rows: list[dict[str, Any]]) -> bool:
    return any(r.get("cannot_run") for r in rows)


def _cannot_run(row: dict[str, Any]) -> Markup | str:
    why = row.get("cannot_run")
    return Markup(f"[yellow]{plain(why)}[/yellow]") if why else ""


def _next_page(found: DefinitionPage, command: str, limit: int, *, err: bool = False) -> None:
    """Say how to list the rest when some were left out: past `--limit`, or sooner under
    --json when the page's specs hold `LIST_BYTES` (never a page cut silently). On stderr
    under --json, so stdout stays one JSON list."""
    if found.next_cursor is None:
        return
    why = "" if len(found.items) >= limit else " (this page ended early: its definitions are large)"
    line = f"more{why}: swarm-engine {command} --limit {limit} --cursor {found.next_cursor}"
    (err_console if err else console).print(f"[dim]{line}[/dim]", highlight=False)


@agent.command("list", epilog=example("swarm-engine agent list --json"))
@paging("agents")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the agents as a JSON list, with their specs (8 MiB of them a page at most).",
)
@pass_existing("registry")
def agent_list(settings: Settings, limit: int, cursor: str | None, as_json: bool) -> None:
    """Agents and versions, by name and version: one line each (descriptions cut;
    'agent show' has a definition whole)."""
    with registry_of(settings) as registry:
        found = service.agents(registry, cursor, limit, specs=as_json, flagged=True)
    rows = found.items
    if as_json:
        emit_json(rows)
        _next_page(found, "agent list --json", limit, err=True)
        return
    flagged = _flagged(rows)
    console.print(
        table(
            None,
            [
                Col("name", flex=True, min=12),
                "version",
                "kind",
                "built in",
                *([CANNOT_RUN] if flagged else []),
                Col("description", flex=True, min=12),
            ],
            (
                (
                    escaped_name(r["name"]),
                    short(escaped_name(r["version"]), VERSION_WIDTH),
                    r["kind"],
                    "yes" if r["builtin"] else "",
                    *([_cannot_run(r)] if flagged else []),
                    r["description"],
                )
                for r in rows
            ),
        )
    )
    _next_page(found, "agent list", limit)


@agent.command("show", epilog=example("swarm-engine agent show word-count"))
@click.argument("ref", metavar="NAME[@VERSION]")
@click.option("--json", "as_json", is_flag=True, help="Print the definition as JSON.")
@pass_existing("registry")
def agent_show(settings: Settings, ref: str, as_json: bool) -> None:
    """One agent (NAME or NAME@VERSION; latest by default)."""
    with registry_of(settings) as registry:
        spec: AgentSpec = service.agent(registry, ref)
        problems = service.kind_problems(registry, spec)
    data = spec.model_dump(mode="json")
    for problem in problems:  # (stderr: the definition on stdout stays as it is)
        click.echo(f"note: this agent cannot run: {problem}", err=True)
    if as_json:
        emit_json(data)
    else:
        emit_yaml(data)


@click.group(epilog=example("swarm-engine workflow list"))
def workflow() -> None:
    """Register and inspect workflows."""


@workflow.command(
    "register", epilog=example("swarm-engine workflow register examples/workflows/text-report")
)
@click.argument("path", required=False, type=PathName())
@click.option(
    "--all",
    "all_dir",
    type=PathName(),
    metavar="DIR",
    help="Every workflow.yaml under DIR.",
)
@click.option("--force", is_flag=True, help="Replace an existing name@version.")
@pass_settings
def workflow_register(
    settings: Settings, path: Path | None, all_dir: Path | None, force: bool
) -> None:
    """Validate and register a workflow.yaml (or all under --all DIR); all or nothing.

    One registered already as it is is accepted and left as it is.
    """
    files = definition_folders(path, all_dir, "workflow.yaml")
    identical: set[str] = set()
    with registry_of(settings) as registry:
        stored = service.register_workflow_files(registry, files, force=force, identical=identical)
    for spec in stored:
        if spec.ref in identical:
            console.print(f"workflow {spec.ref} already registered, identical")
        else:
            console.print(f"registered workflow {spec.ref} ({len(spec.steps)} steps)")


@workflow.command("list", epilog=example("swarm-engine workflow list --json"))
@paging("workflows")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the workflows as a JSON list, with their specs (8 MiB of them a page at most).",
)
@pass_existing("registry")
def workflow_list(settings: Settings, limit: int, cursor: str | None, as_json: bool) -> None:
    """Workflows and versions, by name and version: one line each (descriptions cut;
    'workflow show' has a definition whole)."""
    with registry_of(settings) as registry:
        found = service.workflows(registry, cursor, limit, specs=as_json, flagged=True)
    rows = found.items
    if as_json:
        emit_json(rows)
        _next_page(found, "workflow list --json", limit, err=True)
        return
    if not rows and cursor is None:
        console.print("no workflows (register one: swarm-engine workflow register PATH)")
        return
    flagged = _flagged(rows)
    console.print(
        table(
            None,
            [
                Col("name", flex=True, min=12),
                "version",
                "steps",
                *([CANNOT_RUN] if flagged else []),
                Col("description", flex=True, min=12),
            ],
            (
                (
                    escaped_name(r["name"]),
                    short(escaped_name(r["version"]), VERSION_WIDTH),
                    "?" if r.get("steps") is None else r["steps"],
                    *([_cannot_run(r)] if flagged else []),
                    r["description"],
                )
                for r in rows
            ),
        )
    )
    _next_page(found, "workflow list", limit)


@workflow.command("show", epilog=example("swarm-engine workflow show text-report"))
@click.argument("ref", metavar="NAME[@VERSION]")
@click.option("--json", "as_json", is_flag=True, help="Print the definition as JSON.")
@pass_existing("registry")
def workflow_show(settings: Settings, ref: str, as_json: bool) -> None:
    """One workflow (NAME or NAME@VERSION; latest by default)."""
    with registry_of(settings) as registry:
        spec: WorkflowSpec = service.workflow(registry, ref)
        problems = service.kind_problems(registry, spec)
    data = spec.model_dump(mode="json", exclude_none=True)
    for problem in problems:  # (stderr: the definition on stdout stays as it is)
        click.echo(f"note: this workflow cannot run: {problem}", err=True)
    if as_json:
        emit_json(data)
    else:
        emit_yaml(data)


@workflow.command("runs", epilog=example("swarm-engine workflow runs text-report"))
@click.argument("name")
@click.option(
    "--limit",
    type=Whole(1, 10000),
    default=20,
    show_default=True,
    metavar="N",
    help="At most this many runs (the newest).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as a JSON list.")
@pass_existing("tickets", "registry")
def workflow_runs(settings: Settings, name: str, limit: int, as_json: bool) -> None:
    """Recent runs of a workflow."""
    with registry_of(settings) as registry, store_of(settings) as store:
        rows = of_workflow(store, registry, name, limit)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console.print(f"workflow {plain(name)} has not run yet", highlight=False)
        return
    console.print(
        table(
            None,
            [
                Col("run", justify="right"),
                Col("ticket", justify="right"),
                "version",
                "status",
                "started",
                "duration",
                Col("usage", flex=True, min=10),
                Col("error", flex=True, min=10),
            ],
            (
                (
                    r["id"],
                    r["ticket_id"],
                    r["workflow_version"],
                    styled(r["status"]),
                    ago(r["started_at"]),
                    ms(r["duration_ms"]),
                    usage_line(r),
                    short(r["error"] or "", 200),
                )
                for r in rows
            ),
        )
    )
