"""Agent and workflow operations: register (from files, or from a mapping such as a JSON
body, checked exactly as `agent.yaml` / `workflow.yaml` are), list and show.

Errors: `UsageError` (neither or both of a path and a folder), `ConfigError` (an invalid
definition, one line naming the field), `ConflictError` (name@version registered already
with another definition, or built in), `NotFoundError` (unknown agent or workflow).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from swarm_engine.errors import ConfigError, SwarmError, UsageError
from swarm_engine.records import shown
from swarm_engine.registry.listing import PAGE_DEFINITIONS, DefinitionPage
from swarm_engine.service.values import check_json, check_text

if TYPE_CHECKING:
    from swarm_engine.models import AgentSpec, WorkflowSpec
    from swarm_engine.registry import Registry


def definition_folders(path: Path | None, all_dir: Path | None, filename: str) -> list[Path]:
    """What to register: `[path]`, or every folder under `all_dir` holding `filename`
    (sorted). `UsageError` unless exactly one is given; `ConfigError` for a folder that is
    not one or holds no definition."""
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


def register_agent_files(
    registry: Registry,
    folders: list[Path],
    *,
    force: bool = False,
    identical: set[str] | None = None,
) -> list[AgentSpec]:
    """Register agent packages (folders with an agent.yaml), all or none. An agent
    registered already with the same definition and files is accepted (its package
    copied to this host) and its ref added to `identical` (`Registry.register_agents`)."""
    from swarm_engine.registry.loader import load_agent

    specs = [load_agent(p) for p in folders]
    return registry.register_agents(specs, force=force, identical=identical)


def register_workflow_files(
    registry: Registry,
    paths: list[Path],
    *,
    force: bool = False,
    identical: set[str] | None = None,
) -> list[WorkflowSpec]:
    """Register workflow.yaml files (or folders holding one), all or none; one
    registered already as it is is accepted, its ref added to `identical`."""
    from swarm_engine.registry.loader import load_workflow

    loaded = [(load_workflow(p), str(p / "workflow.yaml" if p.is_dir() else p)) for p in paths]
    return registry.register_workflows(loaded, force=force, identical=identical)


def register_agent(
    registry: Registry,
    data: dict[str, Any],
    *,
    force: bool = False,
    source: str = "agent",
    identical: set[str] | None = None,
) -> AgentSpec:
    """Register one agent from its definition as a mapping (what agent.yaml holds),
    without a package: its command runs with what the VM has. The same definition
    registered already is accepted as it is, its ref added to `identical`."""
    from swarm_engine.registry.loader import agent_from_mapping

    check_json(data, source)
    spec = agent_from_mapping(data, source)
    return registry.register_agents([spec], force=force, identical=identical)[0]


def register_workflow(
    registry: Registry,
    data: dict[str, Any],
    *,
    force: bool = False,
    source: str = "workflow",
    identical: set[str] | None = None,
) -> WorkflowSpec:
    """Register one workflow from its definition as a mapping (what workflow.yaml
    holds). The same definition registered already is accepted as it is, its ref added
    to `identical`."""
    from swarm_engine.registry.loader import workflow_from_mapping

    check_json(data, source)
    spec = workflow_from_mapping(data, source)
    return registry.register_workflows([(spec, source)], force=force, identical=identical)[0]


def agents(
    registry: Registry,
    cursor: str | None = None,
    limit: int = PAGE_DEFINITIONS,
    *,
    specs: bool = True,
    flagged: bool = False,
) -> DefinitionPage:
    """A page of agents and versions by name and version, as stored (`name`, `version`,
    `kind`, `description`, `spec`, `builtin`, `created_at`), from `cursor` (the previous
    page's `next_cursor`), at most `limit`, their specs within `LIST_BYTES`
    (registry/listing.py). `UsageError` for a bad limit or cursor. `flagged`: each with
    `cannot_run`, why it cannot run or None (registry/runnable.py)."""
    return registry.agents(_cursor(cursor), limit, specs=specs, flagged=flagged)


def agent(registry: Registry, ref: str) -> AgentSpec:
    """One agent: `NAME` (latest version) or `NAME@VERSION`."""
    check_text(ref, "agent")
    return registry.agent(ref)


def workflows(
    registry: Registry,
    cursor: str | None = None,
    limit: int = PAGE_DEFINITIONS,
    *,
    specs: bool = True,
    flagged: bool = False,
) -> DefinitionPage:
    """A page of workflows and versions, as stored: as `agents` (without `specs`, each
    with `steps` instead of its spec)."""
    return registry.workflows(_cursor(cursor), limit, specs=specs, flagged=flagged)


def _cursor(cursor: str | None) -> str | None:
    if cursor is not None:
        check_text(cursor, "cursor")
    return cursor


def workflow(registry: Registry, ref: str) -> WorkflowSpec:
    """One workflow: `NAME` (latest version) or `NAME@VERSION`."""
    check_text(ref, "workflow")
    return registry.workflow(ref)


def kind_problems(registry: Registry, spec: AgentSpec | WorkflowSpec) -> list[str]:
    """Why `spec` cannot run for want of an agent kind, one line each: the agent's own
    `kind`, or each step's agent's (each agent looked up once), when no agent kind of
    this engine has that name (a row any client wrote: the engine fails its tickets
    with the same reason). Empty when every kind is known; an agent that cannot be
    read is not this function's to say (`workflow show` and the engine say it)."""
    from swarm_engine.models import AgentSpec
    from swarm_engine.registry.runnable import known_kinds

    kinds = known_kinds()
    agents: list[tuple[str, AgentSpec]] = []
    if isinstance(spec, AgentSpec):
        agents.append(("", spec))
    else:
        for ref in dict.fromkeys(step.agent for step in spec.steps):
            try:
                agents.append((f"agent {shown(ref, 40)}: ", registry.agent(ref)))
            except SwarmError:
                continue
    return [
        f"{where}unknown kind {shown(agent.kind, 40)} (this engine's kinds:"
        f" {', '.join(sorted(kinds))})"
        for where, agent in agents
        if agent.kind not in kinds
    ]
