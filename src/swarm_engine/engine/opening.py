"""A run's opening: the row of a one-step plan's only step, written with the run's start
in one transaction (see `TicketRunner.start_now`), and the started run as the runner
takes it on (`Started`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from swarm_engine.engine.bounds import step_inputs_json
from swarm_engine.engine.plan import Plan, rendered_inputs
from swarm_engine.engine.writes import NewStep
from swarm_engine.records import JsonText


@dataclass
class Started:
    """A started run: its id, its template context, and its only step's queued row as
    `(step id, step_executions id, rendered inputs, their JSON as the row holds it)` if
    that was written with it."""

    run_id: int
    context: dict[str, Any]
    first: tuple[str, int, Any, JsonText] | None


def started_from(
    ids: tuple[int, int | None], context: dict[str, Any], first: tuple[NewStep, Any] | None
) -> Started:
    run_id, exec_id = ids
    if first is None or exec_id is None:
        return Started(run_id, context, None)
    return Started(run_id, context, (first[0].step_id, exec_id, first[1], first[0].inputs))


def only_step(plan: Plan, context: dict[str, Any], budget: int) -> tuple[NewStep, Any] | None:
    """The row of a one-step plan's step, to write with the run's start, and its rendered
    inputs; None if the plan has more steps, its agent has an `inputs` schema (a check
    that may take seconds is never made on the store thread) or the inputs do not render
    or are over their cap for any reason (`bounds.step_inputs_json`, or more than
    `budget`, the bytes the run may store: `bounds.RunBudget`; the step's attempt then
    renders, measures and checks them, and records or raises why, as ever)."""
    if len(plan.steps) != 1:
        return None
    (step,) = plan.steps.values()
    if step.agent.inputs:  # checked apart, off this thread and bounded (`checked_inputs`)
        return None
    try:
        inputs = rendered_inputs(step, context)
        sent = step_inputs_json(inputs)
    except Exception:
        return None
    if len(sent.text) > budget:
        return None
    row = NewStep(
        step_id=step.id,
        agent_name=step.agent.name,
        agent_version=step.agent.version,
        agent_kind=step.agent.kind,
        inputs=sent,
    )
    return row, inputs
