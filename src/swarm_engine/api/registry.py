"""`/v1/agents` and `/v1/workflows`: register (a JSON body holding what agent.yaml or
workflow.yaml would, checked the same way), list, show. An agent registered this way has
no package: its command runs with what the VM has."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response

from swarm_engine.api import models
from swarm_engine.api.bodies import UniqueKeysRoute
from swarm_engine.api.deps import RegistryDep, StoreDep
from swarm_engine.api.numbers import ASCII_WHOLE
from swarm_engine.api.refs import REFERENCE
from swarm_engine.records import MAX_DEFINITION_BYTES
from swarm_engine.registry.listing import (
    MAX_CURSOR_CHARS,
    MAX_PAGE_DEFINITIONS,
    PAGE_DEFINITIONS,
    DefinitionPage,
)
from swarm_engine.service import registry as service
from swarm_engine.service import runs as run_service

router = APIRouter(prefix="/v1", tags=["registry"], route_class=UniqueKeysRoute)
Ref = Annotated[
    str, Path(max_length=200, description="NAME (latest version) or NAME@VERSION."), REFERENCE
]
Force = Annotated[bool, Query(description="Replace a registered name@version.")]
AGENT_EXAMPLE = {"name": "hello", "version": "1.0.0", "kind": "shell",
                 "command": "echo hello ${inputs.who}",
                 "inputs": {"type": "object", "properties": {"who": {"type": "string"}}}}  # fmt: skip
WORKFLOW_EXAMPLE = {"name": "greet", "version": "1.0.0",
                    "steps": [{"id": "say", "agent": "hello", "inputs": {"who": "world"}}]}  # fmt: skip


async def definition_size(request: Request) -> None:
    """413 for a definition body over `MAX_DEFINITION_BYTES` (1 MiB): the limit of an
    agent.yaml or workflow.yaml file, whichever way a definition comes in."""
    size = len(await request.body())  # (read already, within the 2 MiB of any body)
    if size > MAX_DEFINITION_BYTES:
        raise HTTPException(
            status_code=413,
            detail=f"the definition is {size:,} bytes, over the {MAX_DEFINITION_BYTES // 1024}"
            " KiB a definition may hold (as an agent.yaml or workflow.yaml file)",
        )


SizedDefinition = Depends(definition_size)
IDENTICAL: dict[int | str, dict[str, Any]] = {
    200: {"description": "name@version holds this very definition already: left as it is"}
}
"""The answer of a registration that changed nothing (201 when it wrote)."""


@router.post(
    "/agents",
    status_code=201,
    summary="Register an agent",
    dependencies=[SizedDefinition],
    responses=IDENTICAL,
)
def register_agent(
    definition: Annotated[dict[str, Any], Body(examples=[AGENT_EXAMPLE])],
    registry: RegistryDep,
    response: Response,
    force: Force = False,
) -> dict[str, Any]:
    """Register an agent from its definition (agent.yaml's fields, as JSON; see
    docs/agents.md): 201, or 200 when name@version holds this very definition already
    (left as it is). 422 names the first invalid field; 409 when name@version holds
    another definition (unless `force`)."""
    identical: set[str] = set()
    spec = service.register_agent(
        registry, definition, force=force, source="agent", identical=identical
    )
    if identical:
        response.status_code = 200
    return spec.model_dump(mode="json")


Limit = Annotated[
    int, Query(ge=1, le=MAX_PAGE_DEFINITIONS, description="At most this many."), ASCII_WHOLE
]
Cursor = Annotated[
    str | None,
    Query(max_length=MAX_CURSOR_CHARS, description="The `X-Next-Cursor` of the previous page."),
]


def listed(response: Response, found: DefinitionPage) -> list[dict[str, Any]]:
    """`found.items`, with `X-Next-Cursor` when more are left (what to pass as `cursor`)."""
    if found.next_cursor is not None:
        response.headers["X-Next-Cursor"] = found.next_cursor
    return found.items


@router.get("/agents", response_model=list[models.Definition], summary="List agents")
def agents(
    registry: RegistryDep,
    response: Response,
    limit: Limit = PAGE_DEFINITIONS,
    cursor: Cursor = None,
) -> list[dict[str, Any]]:
    """Agents and versions (built-in ones included) by name and version, `limit` per page,
    their specs within 8 MiB a page (a page ends sooner; its first definition is always
    whole); `X-Next-Cursor` pages on (absent on the last page)."""
    return listed(response, service.agents(registry, cursor, limit))


@router.get("/agents/{ref}", summary="Show an agent")
def agent(ref: Ref, registry: RegistryDep) -> dict[str, Any]:
    """One agent's definition."""
    return service.agent(registry, ref).model_dump(mode="json")


@router.post(
    "/workflows",
    status_code=201,
    summary="Register a workflow",
    dependencies=[SizedDefinition],
    responses=IDENTICAL,
)
def register_workflow(
    definition: Annotated[dict[str, Any], Body(examples=[WORKFLOW_EXAMPLE])],
    registry: RegistryDep,
    response: Response,
    force: Force = False,
) -> dict[str, Any]:
    """Register a workflow from its definition (workflow.yaml's fields, as JSON): steps,
    references and agents are checked as for a file. 201, or 200 when name@version
    holds this very definition already (left as it is); 409 when it holds another."""
    identical: set[str] = set()
    spec = service.register_workflow(
        registry, definition, force=force, source="workflow", identical=identical
    )
    if identical:
        response.status_code = 200
    return spec.model_dump(mode="json", exclude_none=True)


@router.get("/workflows", response_model=list[models.Definition], summary="List workflows")
def workflows(
    registry: RegistryDep,
    response: Response,
    limit: Limit = PAGE_DEFINITIONS,
    cursor: Cursor = None,
) -> list[dict[str, Any]]:
    """Workflows and versions, paged as agents are."""
    return listed(response, service.workflows(registry, cursor, limit))


@router.get("/workflows/{ref}", summary="Show a workflow")
def workflow(ref: Ref, registry: RegistryDep) -> dict[str, Any]:
    """One workflow's definition."""
    return service.workflow(registry, ref).model_dump(mode="json", exclude_none=True)


@router.get("/workflows/{ref}/runs", response_model=list[models.Run], summary="A workflow's runs")
def workflow_runs(
    ref: Ref, store: StoreDep, registry: RegistryDep,
    limit: Annotated[int, Query(ge=1, le=1000), ASCII_WHOLE] = 20,
) -> list[dict[str, Any]]:  # fmt: skip
    """The newest runs of a workflow (every version), newest first."""
    return run_service.of_workflow(store, registry, ref, limit)
