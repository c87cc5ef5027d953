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


def steps(store: Store, run_id: int) -> list[dict[str, Any]]:
    """A run's steps, oldest first, numbered (`attempt`)."""
    return numbered(store.runs.steps(run_id))


_steps = steps  # (`runs_with_steps` has an argument of that name)

SHOWN_STEPS = 100
"""Steps of each run `ticket show` prints: the newest (its `--json` has them all)."""
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


def runs_with_steps(
    store: Store,
    ticket_id: int,
    *,
    before: int | None = None,
    limit: int = SHOWN_RUNS,
    steps: int | None = None,
) -> Window:
    """A ticket's newest `limit` runs below id `before`, oldest first, each with its
    `steps`, and how many runs it has in all (a ticket may have any number of runs).
    With `steps`, a run has its newest `steps` steps only and `steps_total`, how many
    it has (a run may have any number of step rows: `ticket show` stays bounded)."""
    check_window(before, limit, MAX_PAGE_RUNS)
    if steps is not None and steps < 1:
        raise UsageError(f"steps must be at least 1 (is {steps})")
    shown = window(
        lambda n: store.runs.runs_for_ticket(ticket_id, before=before, limit=n),
        limit,
        lambda: store.runs.count_for_ticket(ticket_id),
        before is not None,
    )
    for run in shown.items:
        if steps is None:
            run["steps"] = _steps(store, int(run["id"]))
        else:
            newest = _newest_steps(store, int(run["id"]), steps)
            run["steps"], run["steps_total"] = numbered(newest.items), newest.total
    return shown


def _newest_steps(store: Store, run_id: int, limit: int) -> Window:
    return window(
        lambda n: store.runs.last_steps(run_id, n),
        limit,
        lambda: store.runs.count_steps(run_id),
        False,
    )


def runs_of_ticket(
    store: Store, ticket_id: int, *, before: int | None = None, limit: int = PAGE_RUNS
) -> Window:
    """`runs_with_steps` of a ticket that must exist (`NotFoundError`)."""
    store.tickets.get(ticket_id)
    return runs_with_steps(store, ticket_id, before=before, limit=limit)


def run(store: Store, run_id: int) -> dict[str, Any]:
    """One run with its `steps`; `NotFoundError`."""
    record = store.runs.get_run(run_id)
    record["steps"] = steps(store, run_id)
    return record


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
