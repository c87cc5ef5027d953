"""Runs and steps: what ran for a ticket or a workflow, with timings and usage.

Records are dicts decoded leniently from the store (`store.rows.decode_record`): a run
has the `workflow_runs` columns, a step the `step_executions` columns plus `attempt`
(from 1), `vm_backend` and `vm_isolation`. `NotFoundError` for what does not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from swarm_engine.errors import UsageError
from swarm_engine.service.values import MAX_ID

if TYPE_CHECKING:
    from swarm_engine.registry import Registry
    from swarm_engine.store import Store

MAX_RUNS = 10000


def numbered(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Step records with `attempt`: 1 for a step's first try, 2 for its first retry, ...
    (the stored `retry_count` + 1; attempts are counted from 1 everywhere people see them)."""
    for step in steps:
        retries = step.get("retry_count")
        step["attempt"] = retries + 1 if isinstance(retries, int) else None
    return steps


SHOWN_STEPS = 100
"""Steps of each run a view shows (`ticket show` and its `--json`, `GET /v1/tickets/ID`,
`/v1/tickets/ID/runs`, `/v1/runs/ID`, the dashboard): the newest, with `steps_total` and
`steps_before` (the `before` of `steps` for the older ones)."""
PAGE_STEPS = 100
"""Steps `GET /v1/runs/ID/steps` (and `ticket steps`) gives by default (at most
`MAX_PAGE_STEPS`)."""
MAX_PAGE_STEPS = 1000
SHOWN_RUNS = 20
"""Runs a ticket's detail shows (`ticket show`, `GET /v1/tickets/ID`, its page): the newest."""
PAGE_RUNS = 100
"""Runs `GET /v1/tickets/ID/runs` gives by default (at most `MAX_PAGE_RUNS`)."""
MAX_PAGE_RUNS = 1000


@dataclass(frozen=True)
class Window:
    """The newest records of a ticket below a cursor, oldest first, of `total` in all;
    `before` is the cursor for the older ones (None when none is older)."""

    items: list[dict[str, Any]]
    total: int
    before: int | None


def window(
    fetch: Callable[[int], list[dict[str, Any]]], limit: int, count: Callable[[], int], paged: bool
) -> Window:
    """The newest `limit` records `fetch(n)` gives (n newest, oldest first) as a `Window`;
    counted only when some are left out (`paged`: a page past the newest, always)."""
    items = fetch(limit + 1)
    more = len(items) > limit
    items = items[1:] if more else items
    first = items[0].get("id") if items else None
    cursor = first if more and isinstance(first, int) else None
    return Window(items, count() if more or paged else len(items), cursor)


def check_window(before: int | None, limit: int, most: int) -> None:
    if not 1 <= limit <= most:
        raise UsageError(f"limit must be 1 to {most} (is {limit})")
    if before is not None and not 1 <= before <= MAX_ID:
        raise UsageError(f"before must be 1 to {MAX_ID} (is {before})")


def steps(
    store: Store, run_id: int, *, before: int | None = None, limit: int = PAGE_STEPS
) -> Window:
    """A run's newest `limit` steps below id `before`, oldest first, numbered, and how
    many it has in all (a run may have any number of step rows: one answer stays
    bounded). `NotFoundError` for a run that does not exist."""
    check_window(before, limit, MAX_PAGE_STEPS)
    store.runs.get_run(run_id)
    return _steps_window(store, run_id, before=before, limit=limit)


def _steps_window(store: Store, run_id: int, *, before: int | None, limit: int) -> Window:
    shown = window(
        lambda n: store.runs.last_steps(run_id, n, before=before),
        limit,
        lambda: store.runs.count_steps(run_id),
        before is not None,
    )
    numbered(shown.items)
    return shown


def with_steps(store: Store, run: dict[str, Any], limit: int = SHOWN_STEPS) -> dict[str, Any]:
    """`run` with its newest `limit` steps (`steps`, oldest first), `steps_total` (how many
    it has) and `steps_before` (the `before` for the older ones; None when none is left
    out)."""
    newest = _steps_window(store, int(run["id"]), before=None, limit=limit)
    run["steps"], run["steps_total"], run["steps_before"] = (
        newest.items,
        newest.total,
        newest.before,
    )
    return run


def runs_with_steps(
    store: Store,
    ticket_id: int,
    *,
    before: int | None = None,
    limit: int = SHOWN_RUNS,
    steps: int = SHOWN_STEPS,
) -> Window:
    """A ticket's newest `limit` runs below id `before`, oldest first, each `with_steps`
    (its newest `steps` steps), and how many runs it has in all (a ticket may have any
    number of runs, and a run any number of steps: one answer stays bounded)."""
    check_window(before, limit, MAX_PAGE_RUNS)
    if not 1 <= steps <= MAX_PAGE_STEPS:
        raise UsageError(f"steps must be 1 to {MAX_PAGE_STEPS} (is {steps})")
    shown = window(
        lambda n: store.runs.runs_for_ticket(ticket_id, before=before, limit=n),
        limit,
        lambda: store.runs.count_for_ticket(ticket_id),
        before is not None,
    )
    for run in shown.items:
        with_steps(store, run, steps)
    return shown


def runs_of_ticket(
    store: Store, ticket_id: int, *, before: int | None = None, limit: int = PAGE_RUNS
) -> Window:
    """`runs_with_steps` of a ticket that must exist (`NotFoundError`)."""
    store.tickets.get(ticket_id)
    return runs_with_steps(store, ticket_id, before=before, limit=limit)


def run(store: Store, run_id: int) -> dict[str, Any]:
    """One run `with_steps` (its newest `SHOWN_STEPS`); `NotFoundError`."""
    return with_steps(store, store.runs.get_run(run_id))


def recent(store: Store, limit: int = 10) -> list[dict[str, Any]]:
    """The newest runs of every ticket (each with `unisolated_steps`), newest first."""
    _check_limit(limit)
    return store.runs.recent_runs(limit)


def of_workflow(
    store: Store, registry: Registry, ref: str, limit: int = 20
) -> list[dict[str, Any]]:
    """The newest runs of a registered workflow (`NAME` or `NAME@VERSION`: every version's
    runs), newest first. `NotFoundError` for a workflow that is not registered."""
    _check_limit(limit)
    registry.workflow(ref)
    return store.runs.runs_for_workflow(ref.partition("@")[0], limit)


def usage_totals(store: Store) -> dict[str, Any]:
    """API usage summed over every run: the four token counts and `cost_usd`."""
    return store.runs.usage_totals()


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_RUNS:
        raise UsageError(f"limit must be 1 to {MAX_RUNS} (is {limit})")
