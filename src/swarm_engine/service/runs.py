"""Runs and steps: what ran for a ticket or a workflow, with timings and usage.

Records are dicts decoded leniently from the store (`store.rows.decode_record`): a run
has the `workflow_runs` columns, a step the `step_executions` columns plus `attempt`
(from 1), `vm_backend` and `vm_isolation`. `NotFoundError` for what does not exist.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from swarm_engine.errors import ConfigError, UsageError
from swarm_engine.records import split_ref
from swarm_engine.service.values import MAX_ID, MIN_INT

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


VIEW_VALUES_BYTES = 16 * 1024 * 1024
"""Bytes of `inputs`, `outputs` and `error` one view carries at most for its runs, and as
many again for their steps: newest first, and always the view's newest run's and newest
step's (up to the 8 MiB any value and the 64 KiB any error may hold), so that a page of
one step or one run gives any of them whole. The others are None with `left_out` naming
them (a ticket of 100 runs of 100 steps with 4 MiB of outputs each made a detail of
40 GB; 10 runs of 100 steps with 64 KiB errors, one of 131 MB)."""

BUDGETED = ("inputs", "outputs", "error")
"""What a view reads of its runs and steps within `VIEW_VALUES_BYTES` (`Budget.fill`)."""


@dataclass
class Budget:
    """What is left of a view's `VIEW_VALUES_BYTES` (`left`, bytes), and whether nothing
    has been given values yet (`first`: the newest record gets its own whatever their
    size)."""

    left: int = VIEW_VALUES_BYTES
    first: bool = True

    def fill(
        self, records: list[dict[str, Any]], values: Callable[[list[int], int, bool], Any]
    ) -> None:
        """Give `records` (read without their values and errors; any order) their
        `inputs`, `outputs` and `error` (`BUDGETED`) from `values(ids, budget, always)`
        (`RunStore.run_values` or `step_values`), newest first, within what is left; a
        record whose values did not fit gets `left_out`: the names of those it has."""
        ids = [r["id"] for r in records if isinstance(r.get("id"), int)]
        if not ids:
            return
        found: dict[int, dict[str, Any]] = values(ids, max(self.left, 0), self.first)
        used = 0
        for record in records:
            got = found.get(record.get("id"))  # type: ignore[arg-type]
            if got is None:
                continue
            if got.get("shown"):
                for name in BUDGETED:
                    record[name] = got.get(name)
                used = max(used, got["total"] if isinstance(got.get("total"), int) else 0)
                for defect in got.get("defects", []):
                    if defect not in record.setdefault("defects", []):
                        record["defects"].append(defect)
            else:
                left_out = [k for k in BUDGETED if got.get(f"{k}_size") is not None]
                if left_out:
                    record["left_out"] = left_out
        self.left -= used
        self.first = False


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
    if before is not None and not MIN_INT <= before <= MAX_ID:  # ids are any client's
        raise UsageError(f"before must be {MIN_INT} to {MAX_ID} (is {before})")


def steps(
    store: Store, run_id: int, *, before: int | None = None, limit: int = PAGE_STEPS
) -> Window:
    """A run's newest `limit` steps below id `before`, oldest first, numbered, and how
    many it has in all (a run may have any number of step rows: one answer stays
    bounded, their values and errors within `VIEW_VALUES_BYTES`). `NotFoundError` for a
    run that does not exist."""
    check_window(before, limit, MAX_PAGE_STEPS)
    store.runs.get_run(run_id)
    return _steps_window(store, run_id, before=before, limit=limit, budget=Budget())


def _steps_window(
    store: Store, run_id: int, *, before: int | None, limit: int, budget: Budget
) -> Window:
    shown = window(
        lambda n: store.runs.last_steps(run_id, n, before=before, values=False, errors=False),
        limit,
        lambda: store.runs.count_steps(run_id),
        before is not None,
    )
    budget.fill(
        shown.items,
        lambda ids, left, always: store.runs.step_values(run_id, ids, left, always=always),
    )
    numbered(shown.items)
    return shown


def with_steps(
    store: Store, run: dict[str, Any], limit: int = SHOWN_STEPS, budget: Budget | None = None
) -> dict[str, Any]:
    """`run` with its newest `limit` steps (`steps`, oldest first), `steps_total` (how many
    it has) and `steps_before` (the `before` for the older ones; None when none is left
    out); their values within `budget` (a view's own by default)."""
    newest = _steps_window(
        store, int(run["id"]), before=None, limit=limit, budget=budget or Budget()
    )
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
        lambda n: store.runs.runs_for_ticket(
            ticket_id, before=before, limit=n, values=False, errors=False
        ),
        limit,
        lambda: store.runs.count_for_ticket(ticket_id),
        before is not None,
    )
    _fill_runs(store, shown.items)
    step_budget = Budget()
    for run in reversed(shown.items):  # the newest run's steps first
        with_steps(store, run, steps, step_budget)
    return shown


def _fill_runs(store: Store, runs: list[dict[str, Any]]) -> None:
    """Runs read without their values and errors given them, within a view's budget."""
    Budget().fill(runs, lambda ids, left, always: store.runs.run_values(ids, left, always=always))


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
    """The newest runs of every ticket (each with `unisolated_steps`), newest first, their
    values and errors within `VIEW_VALUES_BYTES`."""
    _check_limit(limit)
    runs = store.runs.recent_runs(limit, values=False, errors=False)
    _fill_runs(store, runs)
    return runs


def of_workflow(
    store: Store, registry: Registry, ref: str, limit: int = 20
) -> list[dict[str, Any]]:
    """The newest runs of a registered workflow (`NAME` or `NAME@VERSION`: every version's
    runs), newest first. `NotFoundError` for a workflow that is not registered; one whose
    stored definition does not decode (a cycle another client wrote) has its runs listed
    all the same: they are how its tickets failed."""
    _check_limit(limit)
    split_ref(ref)  # (`ConfigError` for a reference that is none: `NAME@`)
    with contextlib.suppress(ConfigError):
        registry.workflow(ref)
    runs = store.runs.runs_for_workflow(ref.partition("@")[0], limit, values=False, errors=False)
    _fill_runs(store, runs)
    return runs


def usage_totals(store: Store) -> dict[str, Any]:
    """API usage summed over every run: the four token counts and `cost_usd`. A run
    whose usage no real run reaches (records.py: `MAX_STEP_TOKENS`, `MAX_STEP_COST_USD`;
    negative, not a number) is left out, named in `defects`."""
    totals = store.runs.usage_totals()
    left_out = totals.pop("implausible_runs", 0)
    if isinstance(left_out, int) and not isinstance(left_out, bool) and left_out > 0:
        totals.setdefault("defects", []).append(
            f"usage: {left_out} run(s) with an implausible token count or cost (negative,"
            " not a number, over 2**40 tokens or 1e6 USD), left out"
        )
    return totals


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_RUNS:
        raise UsageError(f"limit must be 1 to {MAX_RUNS} (is {limit})")
