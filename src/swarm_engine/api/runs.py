"""`/v1/runs`: runs (one per ticket attempt) and their steps."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from swarm_engine.api import models
from swarm_engine.api.deps import RegistryDep, StoreDep
from swarm_engine.api.numbers import ASCII_WHOLE
from swarm_engine.api.refs import REFERENCE
from swarm_engine.api.tickets import paged
from swarm_engine.service import runs as service
from swarm_engine.service.values import MAX_ID, MIN_INT

router = APIRouter(prefix="/v1/runs", tags=["runs"])
RunPath = Annotated[
    int, Path(ge=MIN_INT, le=MAX_ID, description="A run id (any 64-bit integer)."), ASCII_WHOLE
]


@router.get("", response_model=list[models.Run], summary="Recent runs")
def recent(
    store: StoreDep,
    registry: RegistryDep,
    workflow: Annotated[
        str | None,
        Query(max_length=200, description="Only this workflow's runs (NAME)."),
        REFERENCE,
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000), ASCII_WHOLE] = 20,
) -> list[dict[str, Any]]:
    """The newest runs of every ticket (or of one workflow), newest first, without steps."""
    if workflow is not None:
        return service.of_workflow(store, registry, workflow, limit)
    return service.recent(store, limit)


@router.get("/{run_id}", response_model=models.Run, summary="Show a run")
def show(run_id: RunPath, store: StoreDep) -> dict[str, Any]:
    """One run with its newest 100 steps: timings, VM, exit code, outputs, usage and cost
    (`steps_total` counts them all; `steps_before` pages on through `/steps`)."""
    return service.run(store, run_id)


@router.get("/{run_id}/steps", response_model=list[models.Step], summary="A run's steps")
def steps(
    run_id: RunPath,
    store: StoreDep,
    response: Response,
    before: Annotated[
        int | None,
        Query(
            ge=MIN_INT,
            le=MAX_ID,
            description="Only steps with a lower id (the `X-Before` of "
            "the previous answer, or a run's `steps_before`).",
        ),
        ASCII_WHOLE,
    ] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE_STEPS), ASCII_WHOLE] = service.PAGE_STEPS,
) -> list[dict[str, Any]]:
    """The run's newest `limit` step attempts below `before`, oldest first; `X-Total-Count`
    and `X-Before` headers page on (a run may have any number of steps)."""
    return paged(response, service.steps(store, run_id, before=before, limit=limit))
