"""`/v1/tickets`: create, list (filters, keyset pages), show, cancel, reopen, open, and the
bulk forms. Handlers are plain functions: FastAPI runs them in its thread pool, so store
calls never block the event loop."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from swarm_engine.api import models
from swarm_engine.api.bodies import UniqueKeysRoute
from swarm_engine.api.deps import RegistryDep, StoreDep
from swarm_engine.api.numbers import ASCII_WHOLE
from swarm_engine.api.refs import REFERENCE
from swarm_engine.service import tickets as service
from swarm_engine.service.runs import MAX_PAGE_RUNS, PAGE_RUNS, Window, runs_of_ticket
from swarm_engine.service.values import MAX_ID, MIN_INT

router = APIRouter(prefix="/v1/tickets", tags=["tickets"], route_class=UniqueKeysRoute)
TicketPath = Annotated[
    int, Path(ge=MIN_INT, le=MAX_ID, description="A ticket id (any 64-bit integer)."), ASCII_WHOLE
]


def ticket_out(ticket: Any) -> models.Ticket:
    return models.Ticket.model_validate(ticket.as_dict())


@router.post("", status_code=201, response_model=models.Ticket, summary="Create a ticket")
def create(body: models.NewTicket, store: StoreDep, registry: RegistryDep) -> models.Ticket:
    """Create a ticket, open (engines run it) or a draft. Its agent or workflow must be
    registered; `inputs` are handed to it as they are."""
    new = service.NewTicket(**body.model_dump())
    return ticket_out(service.create(store, registry, new))


@router.get("", response_model=models.TicketPage, summary="List tickets")
def list_tickets(
    store: StoreDep,
    status: Annotated[
        list[models.TicketStatusName] | None,
        Query(description="Only these statuses (repeat it for several)."),
    ] = None,
    agent: Annotated[
        str | None, Query(max_length=200, description="Agent NAME or NAME@VERSION."), REFERENCE
    ] = None,
    workflow: Annotated[str | None, Query(max_length=200), REFERENCE] = None,
    limit: Annotated[int, Query(ge=1, le=1000), ASCII_WHOLE] = 50,
    cursor: Annotated[
        int | None,
        Query(ge=MIN_INT, le=MAX_ID, description="`next_cursor` of the previous page."),
        ASCII_WHOLE,
    ] = None,
) -> models.TicketPage:
    """Tickets newest first, `limit` per page. Keyset paging: each page costs about
    `limit` rows read, however deep it is in a large table."""
    found = service.page(
        store, statuses=status or [], agent=agent, workflow=workflow, cursor=cursor, limit=limit
    )
    return models.TicketPage(items=[ticket_out(t) for t in found.items],
                             next_cursor=found.next_cursor)  # fmt: skip


@router.post("/bulk/cancel", response_model=models.BulkResult, summary="Cancel many tickets")
def cancel_many(body: models.TicketIds, store: StoreDep) -> models.BulkResult:
    """Cancel every listed ticket that has not ended, in one statement."""
    return _bulk(service.cancel_many(store, body.ids))


@router.post("/bulk/retry", response_model=models.BulkResult, summary="Retry many tickets")
def retry_many(body: models.TicketIds, store: StoreDep) -> models.BulkResult:
    """Put every listed ticket that ended (done, failed, cancelled) back in the queue, in
    one statement (as `reopen` does for one)."""
    return _bulk(service.retry_many(store, body.ids))


def _bulk(result: service.Bulk) -> models.BulkResult:
    return models.BulkResult(
        changed=result.changed,
        skipped=[models.Skipped(id=i, reason=why) for i, why in result.skipped.items()],
    )


@router.get("/{ticket_id}", response_model=models.TicketDetail, summary="Show a ticket")
def show(ticket_id: TicketPath, store: StoreDep) -> models.TicketDetail:
    """A ticket with its whole inputs, result and error, its newest 20 runs with their
    steps and its newest 100 status events (`runs_total`, `events_total` count them all;
    `runs_before`, `events_before` page on to the older ones through `/runs`, `/events`)."""
    return models.TicketDetail.model_validate(service.detail(store, ticket_id).as_dict())


@router.post("/{ticket_id}/cancel", response_model=models.Ticket, summary="Cancel a ticket")
def cancel(ticket_id: TicketPath, store: StoreDep) -> models.Ticket:
    """Cancel a ticket that has not ended; its engine stops a running one within about a
    second. 409 when it has ended already."""
    return ticket_out(service.cancel(store, ticket_id))


@router.post("/{ticket_id}/reopen", response_model=models.Ticket, summary="Reopen a ticket")
def reopen(ticket_id: TicketPath, store: StoreDep) -> models.Ticket:
    """Put a done, failed or cancelled ticket back in the queue (attempts start again)."""
    return ticket_out(service.reopen(store, ticket_id))


@router.post("/{ticket_id}/open", response_model=models.Ticket, summary="Queue a draft")
def open_draft(ticket_id: TicketPath, store: StoreDep) -> models.Ticket:
    """Queue a draft for the engines (draft -> open); an open ticket stays as it is."""
    return ticket_out(service.open_draft(store, ticket_id))


Before = Annotated[
    int | None,
    Query(ge=MIN_INT, le=MAX_ID, description="Only those with a lower id (the `X-Before` of the "
          "previous answer, or the detail's `runs_before` / `events_before`)."),
    ASCII_WHOLE,
]  # fmt: skip


def paged(response: Response, shown: Window) -> list[dict[str, Any]]:
    """`shown.items`, with `X-Total-Count` (how many in all) and, when older ones are left
    out, `X-Before` (what to pass as `before` for them)."""
    response.headers["X-Total-Count"] = str(shown.total)
    if shown.before is not None:
        response.headers["X-Before"] = str(shown.before)
    return shown.items


@router.get("/{ticket_id}/runs", response_model=list[models.Run], summary="A ticket's runs")
def runs(
    ticket_id: TicketPath,
    store: StoreDep,
    response: Response,
    before: Before = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_RUNS), ASCII_WHOLE] = PAGE_RUNS,
) -> list[dict[str, Any]]:
    """The ticket's newest `limit` runs (one per attempt) below `before`, oldest first, each
    with its steps; `X-Total-Count` and `X-Before` headers page on."""
    return paged(response, runs_of_ticket(store, ticket_id, before=before, limit=limit))


@router.get("/{ticket_id}/events", response_model=list[models.Event], summary="A ticket's events")
def events(
    ticket_id: TicketPath,
    store: StoreDep,
    response: Response,
    before: Before = None,
    limit: Annotated[
        int, Query(ge=1, le=service.MAX_PAGE_EVENTS), ASCII_WHOLE
    ] = service.PAGE_EVENTS,
) -> list[dict[str, Any]]:
    """The ticket's newest `limit` status changes (by any writer) below `before`, oldest
    first; `X-Total-Count` and `X-Before` headers page on."""
    return paged(response, service.events(store, ticket_id, before=before, limit=limit))
