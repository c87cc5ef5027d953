"""Ticket operations with their rules: create, list (filtered, keyset pages), show, cancel,
reopen, queue, and the bulk forms. The CLI and the HTTP API call these; neither checks
anything itself beyond its own syntax.

Errors: `UsageError` (a request that can never succeed: bad value, unknown status, no
agent or both), `NotFoundError` (ticket, agent or workflow), `ConflictError` (the ticket's
state forbids it), `StoreError` (the store could not do it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from swarm_engine.errors import ConflictError, UsageError
from swarm_engine.records import (
    MAX_DESCRIPTION_BYTES,
    MAX_TICKET_TIMEOUT_SECONDS,
    MAX_TITLE_BYTES,
    TicketStatus,
    inputs_too_big,
    shown,
    split_ref,
    text_too_big,
    variables_problem,
)
from swarm_engine.service.runs import (
    SHOWN_RUNS,
    SHOWN_STEPS,
    Window,
    check_window,
    runs_with_steps,
    window,
)
from swarm_engine.service.values import MAX_ID, MIN_INT, check_ids, check_json, check_text
from swarm_engine.store.engines import holder
from swarm_engine.store.rows import Ticket
from swarm_engine.store.tickets import lease_ran_out, spent_by_reclaim

if TYPE_CHECKING:
    from swarm_engine.registry import Registry
    from swarm_engine.store import Store

STATUS_NAMES = tuple(s.value for s in TicketStatus)
MAX_PAGE = 100_000
MAX_ATTEMPTS = 100
MAX_TIMEOUT = MAX_TICKET_TIMEOUT_SECONDS


class Fields(NamedTuple):
    """How a caller names the fields in its messages (`--agent` on the command line)."""

    agent: str = "agent"
    workflow: str = "workflow"


API_FIELDS = Fields()
CLI_FIELDS = Fields("--agent", "--workflow")


@dataclass(frozen=True)
class NewTicket:
    """A ticket to create. `agent` / `workflow`: `name` or `name@version` (exactly one);
    `priority`: higher is claimed first (a 64-bit integer); `max_attempts`: 1..100;
    `timeout_seconds`: a whole-ticket timeout, 0.001 s .. 365 days; `draft`: create it as a
    draft that no engine runs until it is opened."""

    title: str
    description: str = ""
    agent: str | None = None
    workflow: str | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    priority: int = 0
    max_attempts: int = 3
    timeout_seconds: float | None = None
    draft: bool = False


def create(store: Store, registry: Registry, new: NewTicket, names: Fields = API_FIELDS) -> Ticket:
    """Create a ticket (open, or draft) after checking it can run: exactly one of agent
    or workflow, which must be registered and not a template; values the stores can hold;
    a title of at most `MAX_TITLE_BYTES` (64 KiB), a description of at most
    `MAX_DESCRIPTION_BYTES` (1 MiB), inputs of at most `MAX_INPUTS_BYTES` (8 MiB).
    Returns the stored ticket."""
    check_target(new.agent, new.workflow, names)
    check_text(new.title, "title")
    check_text(new.description, "description")
    for value, name, limit in (
        (new.title, "title", MAX_TITLE_BYTES),
        (new.description, "description", MAX_DESCRIPTION_BYTES),
    ):
        too_big = text_too_big(value, limit)
        if too_big is not None:
            raise UsageError(f"{name}: {too_big}")
    check_json(dict(new.inputs), "inputs")
    too_big = inputs_too_big(json.dumps(dict(new.inputs)))  # (as the store writes it)
    if too_big is not None:
        raise UsageError(f"inputs: {too_big}")
    if not MIN_INT <= new.priority <= MAX_ID:
        raise UsageError(f"priority must be a 64-bit integer (is {new.priority})")
    if not 1 <= new.max_attempts <= MAX_ATTEMPTS:
        raise UsageError(f"max_attempts must be 1 to {MAX_ATTEMPTS} (is {new.max_attempts})")
    timeout = new.timeout_seconds
    if timeout is not None and not 0.001 <= timeout <= MAX_TIMEOUT:  # False for NaN
        raise UsageError(f"timeout_seconds must be 0.001 to {MAX_TIMEOUT:.0f} (is {timeout})")
    if new.agent is not None:
        check_text(new.agent, names.agent)
        registry.require_agent(new.agent)  # NotFoundError; ConfigError for a bad row
        if new.agent.startswith("_template:"):
            raise UsageError(f"{shown(new.agent)} is a template; register an agent made from it")
    else:
        check_text(str(new.workflow), names.workflow)
        problem = variables_problem(new.inputs)
        if problem:
            raise UsageError(problem)
        registry.workflow(str(new.workflow))
    ticket_id = store.tickets.create(
        title=new.title,
        description=new.description,
        agent_id=new.agent,
        workflow_id=new.workflow,
        inputs=new.inputs,
        priority=new.priority,
        status="draft" if new.draft else "open",
        max_attempts=new.max_attempts,
        timeout_seconds=timeout,
    )
    return store.tickets.get(ticket_id)


def check_target(agent: str | None, workflow: str | None, names: Fields = API_FIELDS) -> None:
    """`UsageError` unless exactly one of `agent` and `workflow` is given."""
    if (agent is None) == (workflow is None):
        raise UsageError(f"give exactly one of {names.agent} or {names.workflow}")


def check_statuses(statuses: Iterable[str]) -> list[str]:
    """The statuses as given, or `UsageError` for one no ticket can have."""
    out = list(statuses)
    for status in out:
        if status not in STATUS_NAMES:
            raise UsageError(f"unknown status {shown(status)} (one of: {', '.join(STATUS_NAMES)})")
    return out


@dataclass(frozen=True)
class Page:
    """One page of tickets, newest first; `next_cursor` is what gets the next page (None
    on the last one)."""

    items: list[Ticket]
    next_cursor: int | None


PAGE_BYTES = 8 * 1024 * 1024
"""A page of tickets stops once its tickets' inputs and results add up to this much."""


def page(
    store: Store,
    *,
    statuses: Sequence[str] = (),
    agent: str | None = None,
    workflow: str | None = None,
    cursor: int | None = None,
    limit: int = 50,
) -> Page:
    """Tickets newest first, filtered (any of `statuses`; `agent` / `workflow` by name or
    `name@version`), `limit` (1..100,000) per page, from `cursor` (the previous page's
    `next_cursor`; None for the first). Keyset paging: a page costs about `limit` rows
    read, whatever its depth in a large table."""
    wanted = check_statuses(statuses)
    if not 1 <= limit <= MAX_PAGE:
        raise UsageError(f"limit must be 1 to {MAX_PAGE} (is {limit})")
    if cursor is not None and not MIN_INT <= cursor <= MAX_ID:
        raise UsageError(f"cursor {cursor} is not one this API gave")
    for value, name in ((agent, "agent"), (workflow, "workflow")):
        if value is not None:
            check_text(value, name)
            split_ref(value)  # `name@`: no version, refused as every reference is
    rows = store.tickets.page(
        statuses=wanted or None, agent=agent, workflow=workflow, before=cursor, limit=limit + 1
    )
    more = len(rows) > limit
    rows = rows[:limit]
    # bounded in bytes too: tickets may hold megabytes of inputs and results each, so a
    # page ends early (its cursor says where to go on) once it holds PAGE_BYTES of them;
    # a ticket bigger than that alone comes first on its page with its biggest values
    # left out (`fitted`)
    size = 0
    for i, row in enumerate(rows):
        item = _size(row)
        if item > PAGE_BYTES and i == 0:
            rows[0] = row = fitted(row, PAGE_BYTES)
            item = _size(row)
        size += item
        if size > PAGE_BYTES and i > 0:
            return Page(rows[:i], rows[i - 1].id)
    return Page(rows, rows[-1].id if more and rows else None)


LISTED_FIELDS = ("result", "inputs", "description", "title", "error")
"""A ticket's values that may be big, which `fitted` may leave out of a list."""
KEPT_CHARS = 200
"""Of a text value left out of a list, the first this many characters stay."""


def _bytes(value: Any) -> int:
    return len(json.dumps(value, default=str))


def _size(ticket: Ticket) -> int:
    """About how many bytes a ticket takes in a list (its JSON)."""
    return 1024 + sum(_bytes(getattr(ticket, name)) for name in LISTED_FIELDS)


def fitted(ticket: Ticket, room: int) -> Ticket:
    """`ticket` as a list shows it in at most about `room` bytes: while it takes more, its
    biggest value is left out, a line in `defects` saying so (`result: N bytes of JSON
    left out of this list; ticket show ID ...`): a JSON value as null (inputs: {}), a
    text as its first `KEPT_CHARS` characters and a marker."""
    changes: dict[str, Any] = {}
    defects = list(ticket.defects)
    while _size(replace(ticket, **changes)) > room:
        name = max(
            (n for n in LISTED_FIELDS if n not in changes),
            key=lambda n: _bytes(getattr(ticket, n)),
            default=None,
        )
        if name is None:
            break
        value = getattr(ticket, name)
        size = _bytes(value)
        where = f"`swarm-engine ticket show {ticket.id}` or GET /v1/tickets/{ticket.id} has it"
        if isinstance(value, str):
            changes[name] = value[:KEPT_CHARS] + f" [... left out of this list; {where} ...]"
            defects.append(f"{name}: {size:,} bytes, cut in this list ({where})")
        else:
            changes[name] = {} if name == "inputs" else None
            defects.append(f"{name}: {size:,} bytes of JSON, left out of this list ({where})")
    return replace(ticket, **changes, defects=tuple(defects))


SHOWN_EVENTS = 100
"""Status events a ticket's detail shows: the newest."""
PAGE_EVENTS = 1000
"""Events `GET /v1/tickets/ID/events` gives by default (at most `MAX_PAGE_EVENTS`)."""
MAX_PAGE_EVENTS = 10000


@dataclass(frozen=True)
class Detail:
    """A ticket with its newest runs (each with `steps`) and newest status events, each
    oldest first, with how many it has in all and the cursors to the older ones (a ticket
    may have any number of either: one answer stays bounded)."""

    ticket: Ticket
    runs: Window
    events: Window

    def as_dict(self) -> dict[str, Any]:
        """The ticket's fields, `runs`, `events`, and `runs_total`, `events_total`,
        `runs_before`, `events_before` (the `before` for the older ones, or None)."""
        return self.ticket.as_dict() | {
            "runs": self.runs.items,
            "events": self.events.items,
            "runs_total": self.runs.total,
            "events_total": self.events.total,
            "runs_before": self.runs.before,
            "events_before": self.events.before,
        }


def detail(
    store: Store,
    ticket_id: int,
    *,
    runs: int = SHOWN_RUNS,
    before: int | None = None,
    steps: int = SHOWN_STEPS,
) -> Detail:
    """`ticket show`: the ticket, its newest `runs` runs (below id `before`), each with
    its newest `steps` steps, `steps_total` and `steps_before` (`runs.with_steps`), its
    newest `SHOWN_EVENTS` events. `NotFoundError`."""
    ticket = store.tickets.get(ticket_id)
    shown = runs_with_steps(store, ticket_id, before=before, limit=runs, steps=steps)
    return Detail(ticket, shown, events(store, ticket_id, limit=SHOWN_EVENTS))


def events(
    store: Store, ticket_id: int, *, before: int | None = None, limit: int = PAGE_EVENTS
) -> Window:
    """A ticket's newest `limit` status changes below id `before`, oldest first.
    `NotFoundError`."""
    check_window(before, limit, MAX_PAGE_EVENTS)
    store.tickets.get(ticket_id)
    return window(
        lambda n: store.tickets.events(ticket_id, before=before, limit=n),
        limit,
        lambda: store.tickets.count_events(ticket_id),
        before is not None,
    )


def cancel(store: Store, ticket_id: int) -> Ticket:
    """Cancel a ticket that has not ended (its engine stops a running one within about a
    second). `NotFoundError`; `ConflictError` when it has ended already."""
    return store.tickets.cancel(ticket_id)


def reopen(store: Store, ticket_id: int) -> Ticket:
    """Put a done, failed or cancelled ticket back in the queue. `ConflictError` otherwise.
    A run of it that a running engine is still stopping (a cancel just before) is left to
    that engine: no engine claims the ticket until that run has ended (`stopping_on`)."""
    return store.tickets.reopen(ticket_id)


def stopping_on(store: Store, ticket_id: int) -> str | None:
    """The engine still stopping a run of this ticket (the newest run, still `running`),
    if any: an open ticket waits for it to end before any engine claims it."""
    runs = store.runs.runs_for_ticket(ticket_id, limit=1, values=False)
    if not runs or runs[-1]["status"] != "running":
        return None
    if runs[-1]["attempt_id"] == store.tickets.get(ticket_id).attempt_id:
        return None  # the new attempt's own run: it runs already
    engine = runs[-1]["engine_id"]
    return "?" if engine is None else str(engine)  # (None: an id over 1 KiB, not read)


def open_draft(store: Store, ticket_id: int) -> Ticket:
    """Queue a draft (draft -> open). `ConflictError` for a ticket past that."""
    return store.tickets.open(ticket_id)


def queue(
    store: Store,
    ticket_id: int,
    *,
    host: str,
    alive: Callable[[Any], bool],
    reclaim: Callable[[], object] | None = None,
) -> str:
    """`run-ticket` without waiting: queue a draft for the engines. Returns what happened,
    as one line; `ConflictError` for a ticket that ended (reopen it first). A ticket an
    engine holds is named with it, and whether that engine runs (`store.engines.holder`:
    `host` is this host, `alive(pid)` says whether a process of it lives). A held ticket
    whose lease has run out is first reclaimed with `reclaim` (the engines' reclaim of
    every expired lease, its VMs here stopped first): re-queued, or failed when it has no
    attempts left (`ConflictError` naming its error)."""
    row = store.tickets.get(ticket_id)
    if reclaim is not None and lease_ran_out(row):
        reclaim()
        row = store.tickets.get(ticket_id)
        if row.status == "open":
            return (
                f"ticket {ticket_id}: its lease had run out (its engine stopped renewing it);"
                " re-queued: a running engine ('swarm-engine start') will run it"
            )
        if row.status == "failed":
            raise spent_by_reclaim(row)
    if row.status == "draft":
        store.tickets.open(ticket_id)
        return f"ticket {ticket_id} queued; a running engine ('swarm-engine start') will run it"
    if row.status == "open":
        return f"ticket {ticket_id} is already queued"
    if row.status in ("claimed", "running"):
        engine = store.engines.get(row.engine_id)
        return (
            f"ticket {ticket_id} is {row.status} by {holder(row, engine, host=host, alive=alive)}"
        )
    raise ConflictError(f"ticket {ticket_id} is {row.status} (use 'ticket reopen' first)")


@dataclass(frozen=True)
class Bulk:
    """What a bulk action did: the ids it `changed`, and why each other one was not
    (`skipped`: id -> reason)."""

    changed: list[int]
    skipped: dict[int, str]


def cancel_many(store: Store, ticket_ids: Iterable[int]) -> Bulk:
    """Cancel these tickets (at most 1000) in one statement; ended ones are skipped."""
    ids = check_ids(ticket_ids)
    changed = store.tickets.cancel_many(ids)
    return _bulk(store, ids, changed, "already {status}")


def retry_many(store: Store, ticket_ids: Iterable[int]) -> Bulk:
    """Reopen these tickets (at most 1000) in one statement: each that ended (done,
    failed, cancelled) goes back in the queue; the others are skipped."""
    ids = check_ids(ticket_ids)
    changed = store.tickets.reopen_many(ids)
    return _bulk(store, ids, changed, "{status}; only done, failed or cancelled reopen")


def _bulk(store: Store, ids: list[int], changed: list[int], why: str) -> Bulk:
    done = set(changed)
    rest = [i for i in ids if i not in done]
    statuses = store.tickets.statuses_of(rest)
    skipped = {
        i: why.format(status=statuses[i]) if i in statuses else "does not exist" for i in rest
    }
    return Bulk(sorted(done), skipped)
