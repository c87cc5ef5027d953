"""A run's plan as a DAG of steps: each step started once the steps it needs are done,
independent ones at once (bounded by the VM pool), each attempt a `StepAttempt`.

`execute` is called by the ticket runner (`engine/runner.py`) with the run's context, in
which each finished step's outputs feed later steps (`${steps.<id>.outputs.<key>}`). A
step that fails stops its running siblings; the steps not started are recorded skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import TYPE_CHECKING, Any

from swarm_engine.agents.base import StepOutcome
from swarm_engine.engine.attempt import StepAttempt
from swarm_engine.engine.events import Event
from swarm_engine.engine.plan import Plan, PlannedStep, checked_inputs
from swarm_engine.errors import StaleAttemptError, SwarmError
from swarm_engine.store import Ticket
from swarm_engine.templating import render

if TYPE_CHECKING:
    from swarm_engine.engine.runner import TicketRunner


class StepFailed(Exception):
    def __init__(self, step_id: str, error: str) -> None:
        super().__init__(f"step {step_id!r} failed: {error}")
        self.step_id = step_id
        self.error = error


async def execute(
    runner: TicketRunner,
    plan: Plan,
    ticket: Ticket,
    run_id: int,
    context: dict[str, Any],
    queued: dict[str, tuple[int, Any]],
) -> Any:
    """Run the DAG; `queued`: steps whose first attempt's row is already written, by
    step id: that row's id and the inputs it was written with."""
    hold_end = len(plan.steps) == 1  # the only step's end goes with the run's end
    pending = dict(plan.steps)
    running: dict[asyncio.Task[dict[str, Any]], str] = {}
    failure: StepFailed | None = None
    try:
        while pending or running:
            if failure is None:
                # steps ready together write their rows in the plan's order (their inputs
                # are checked side by side, and a check's time is the schema's)
                before: asyncio.Future[None] | None = None
                for sid, step in list(pending.items()):
                    if step.needs <= context["steps"].keys():
                        del pending[sid]
                        written = asyncio.get_running_loop().create_future()
                        task = asyncio.create_task(
                            _run_step(
                                runner, step, context, ticket, run_id, queued.get(sid),
                                hold_end, (before, written),
                            )
                        )  # fmt: skip
                        task.add_done_callback(functools.partial(_release, written))
                        running[task] = sid
                        before = written
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                sid = running.pop(task)
                if task.cancelled():  # a sibling stopped because another step failed
                    continue
                exc = task.exception()
                if exc is None:
                    context["steps"][sid] = {"outputs": task.result()}
                    continue
                if isinstance(exc, StepFailed):
                    failure = failure or exc
                else:
                    raise exc
            if failure is not None:
                for task in running:
                    task.cancel()
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    if failure is not None:
        for sid in pending:
            step = plan.steps[sid]
            with contextlib.suppress(StaleAttemptError):
                await runner.write(
                    ticket,
                    runner.store.runs.add_step,
                    run_id,
                    step_id=sid,
                    agent_name=step.agent.name,
                    agent_version=step.agent.version,
                    agent_kind=step.agent.kind,
                    inputs={},
                    status="skipped",
                    error=f"not run: step {failure.step_id!r} failed",
                )
        raise failure
    outputs = {sid: context["steps"][sid]["outputs"] for sid in plan.leaves()}
    if plan.workflow is None:
        return outputs[next(iter(plan.steps))]
    if plan.workflow.outputs is not None:
        try:
            return render(plan.workflow.outputs, context)
        except SwarmError as exc:
            raise StepFailed("outputs", str(exc)) from exc
    return outputs


def _release(written: asyncio.Future[None], _task: object = None) -> None:
    """Let the next step write its row: this one's is written, or never will be."""
    if not written.done():
        written.set_result(None)


Order = tuple["asyncio.Future[None] | None", "asyncio.Future[None] | None"]
"""(the row to be written before this step's first, this step's first row written)."""


async def _run_step(
    runner: TicketRunner,
    step: PlannedStep,
    context: dict[str, Any],
    ticket: Ticket,
    run_id: int,
    queued: tuple[int, Any] | None,
    hold_end: bool,
    order: Order = (None, None),
) -> dict[str, Any]:
    """The step's attempts; `queued`: its first attempt's row id and rendered inputs,
    if that row was written with the run's start; `order`: its first row is written once
    `order[0]` is done, and `order[1]` is done once it is (or, by the DAG loop's
    done-callback, once the step ended without)."""
    outcome = StepOutcome(error="not run")
    for attempt in range(step.retry.attempts):
        if attempt:
            delay = min(
                step.retry.backoff_seconds * step.retry.backoff_factor ** (attempt - 1),
                step.retry.max_backoff_seconds,
            )
            await asyncio.sleep(delay)
        if attempt == 0 and queued is not None:
            exec_id, inputs = queued
        else:
            exec_id, inputs = await _queue(
                runner, step, context, ticket, run_id, attempt, order if attempt == 0 else None
            )
        runner.events(Event("step_queued", ticket.id, run_id, step.id, {"attempt": attempt}))
        outcome = await StepAttempt(
            runner, step, exec_id, inputs, ticket, run_id, attempt,
            on_held=runner.holder(run_id) if hold_end else None,
        ).run()  # fmt: skip
        if outcome.ok:
            return outcome.outputs
        if outcome.usage.stop_reason == "budget_exceeded":
            break  # final: a retry would start with a fresh budget
    raise StepFailed(step.id, outcome.error or "failed")


async def _queue(
    runner: TicketRunner,
    step: PlannedStep,
    context: dict[str, Any],
    ticket: Ticket,
    run_id: int,
    attempt: int,
    order: Order | None = None,
) -> tuple[int, Any]:
    """A step attempt's inputs rendered and checked, and its row written (`queued`); if
    the inputs do not render or are refused, a failed row and `StepFailed`. `order`: see
    `_run_step`."""

    async def add(inputs: dict[str, Any], status: str = "queued", error: str | None = None) -> int:
        """The attempt's row, written as the attempt's ticket's (fenced) write."""
        before, written = order or (None, None)
        if before is not None:  # (`wait`: a cancel of this step leaves `before` alone)
            await asyncio.wait([before])
        try:
            return await runner.write(
                ticket, runner.store.runs.add_step, run_id, step_id=step.id,
                agent_name=step.agent.name, agent_version=step.agent.version,
                agent_kind=step.agent.kind, inputs=inputs, retry_count=attempt,
                status=status, error=error,
            )  # fmt: skip
        finally:
            if written is not None and not written.done():
                written.set_result(None)

    try:
        inputs = await checked_inputs(step, context, runner.checker)
    except SwarmError as exc:
        await add({}, "failed", f"inputs: {exc}")
        raise StepFailed(step.id, f"inputs: {exc}") from exc
    exec_id = await add(inputs if isinstance(inputs, dict) else {"value": inputs})
    return exec_id, inputs
