"""`swarm-engine agent ...` and `swarm-engine workflow ...`."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from swarm_engine.cli.app import pass_settings, registry_of, store_of
from swarm_engine.cli.output import ago, console, emit_json, ms, short, styled, table, usage_line
from swarm_engine.config import Settings
from swarm_engine.errors import ConfigError, UsageError
from swarm_engine.models import AgentSpec, WorkflowSpec
from swarm_engine.registry import load_agent, load_workflow


def _collect(path: Path | None, all_dir: Path | None, filename: str) -> list[Path]:
    if (path is None) == (all_dir is None):
        raise UsageError("give a PATH, or --all DIR")
    if path is not None:
        return [path]
    assert all_dir is not None
    if not all_dir.is_dir():
        raise ConfigError(f"{all_dir}: not a folder")
    found = sorted(p.parent for p in all_dir.rglob(filename))
    if not found:
        raise ConfigError(f"{all_dir}: no {filename} found")
    return found


@click.group()
def agent() -> None:
    """Register and inspect agents."""


@agent.command("register")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option(
    "--all", "all_dir", type=click.Path(path_type=Path), help="Every agent.yaml under DIR."
)
@click.option("--force", is_flag=True, help="Replace an existing name@version.")
@pass_settings
def agent_register(
    settings: Settings, path: Path | None, all_dir: Path | None, force: bool
) -> None:
    """Register an agent package (a folder with agent.yaml), or all under --all DIR.

    All or nothing: if one definition is invalid, none is registered.
    """
    specs = [load_agent(p) for p in _collect(path, all_dir, "agent.yaml")]
    with registry_of(settings) as registry:
        stored = registry.register_agents(specs, force=force)
    for spec in stored:
        console.print(f"registered agent {spec.ref} ({spec.kind})")


@agent.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
def agent_list(settings: Settings, as_json: bool) -> None:
    """All agents and versions."""
    with registry_of(settings) as registry:
        rows = registry.agents()
    if as_json:
        emit_json(rows)
        return
    console.print(
        table(
            None,
            ["name", "version", "kind", "built in", "description"],
            (
                (
                    r["name"],
                    r["version"],
                    r["kind"],
                    "yes" if r["builtin"] else "",
                    short(r["description"], 70),
                )
                for r in rows
            ),
        )
    )


@agent.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
def agent_show(settings: Settings, ref: str, as_json: bool) -> None:
    """One agent (NAME or NAME@VERSION; latest by default)."""
    with registry_of(settings) as registry:
        spec: AgentSpec = registry.agent(ref)
    data = spec.model_dump(mode="json")
    if as_json:
        emit_json(data)
    else:
        console.print(yaml.safe_dump(data, sort_keys=False).rstrip())


@click.group()
def workflow() -> None:
    """Register and inspect workflows."""


@workflow.command("register")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option(
    "--all", "all_dir", type=click.Path(path_type=Path), help="Every workflow.yaml under DIR."
)
@click.option("--force", is_flag=True, help="Replace an existing name@version.")
@pass_settings
def workflow_register(
    settings: Settings, path: Path | None, all_dir: Path | None, force: bool
) -> None:
    """Validate and register a workflow.yaml (or all under --all DIR); all or nothing."""
    files = _collect(path, all_dir, "workflow.yaml")
    loaded = [(load_workflow(p), str(p / "workflow.yaml" if p.is_dir() else p)) for p in files]
    with registry_of(settings) as registry:
        stored = registry.register_workflows(loaded, force=force)
    for spec in stored:
        console.print(f"registered workflow {spec.ref} ({len(spec.steps)} steps)")


@workflow.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
def workflow_list(settings: Settings, as_json: bool) -> None:
    """All workflows and versions."""
    with registry_of(settings) as registry:
        rows = registry.workflows()
    if as_json:
        emit_json(rows)
        return
    console.print(
        table(
            None,
            ["name", "version", "steps", "description"],
            (
                (r["name"], r["version"], len(r["spec"]["steps"]), short(r["description"], 70))
                for r in rows
            ),
        )
    )


@workflow.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
def workflow_show(settings: Settings, ref: str, as_json: bool) -> None:
    """One workflow (NAME or NAME@VERSION; latest by default)."""
    with registry_of(settings) as registry:
        spec: WorkflowSpec = registry.workflow(ref)
    data = spec.model_dump(mode="json", exclude_none=True)
    if as_json:
        emit_json(data)
    else:
        console.print(yaml.safe_dump(data, sort_keys=False).rstrip())


@workflow.command("runs")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 10000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_settings
def workflow_runs(settings: Settings, name: str, limit: int, as_json: bool) -> None:
    """Recent runs of a workflow."""
    with registry_of(settings) as registry:
        registry.workflow(name)
    with store_of(settings) as store:
        rows = store.runs.runs_for_workflow(name.partition("@")[0], limit)
    if as_json:
        emit_json(rows)
        return
    console.print(
        table(
            None,
            ["run", "ticket", "version", "status", "started", "duration", "usage", "error"],
            (
                (
                    r["id"],
                    r["ticket_id"],
                    r["workflow_version"],
                    styled(r["status"]),
                    ago(r["started_at"]),
                    ms(r["duration_ms"]),
                    usage_line(r),
                    short(r["error"] or "", 50),
                )
                for r in rows
            ),
        )
    )
