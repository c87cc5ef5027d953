"""A run's plan as a DAG of steps: each step started once the steps it needs are done,
independent ones at once (bounded by the VM pool), each attempt a `StepAttempt`.

`execute` is called by the ticket runner (`engine/runner.py`) with the run's context, in
which each finished step's outputs feed later steps (`${steps.<id>.outputs.<key>}`). A
step that fails stops its running siblings; the steps not started are recorded skipped
with the run's end (`not_run`), as they are when the run ends in any other way its
engine records (a timeout, a cancel, the engine's stop).
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any

from swarm_engine.agents.base import StepOutcome
from swarm_engine.engine.attempt import StepAttempt
from swarm_engine.engine.bounds import RESULT_BYTES, RunBudgetError, combined_json, result_json
from swarm_engine.engine.events import Event
from swarm_engine.engine.plan import Plan, PlannedStep, checked_inputs
from swarm_engine.errors import AgentError, SwarmError
from swarm_engine.records import JsonText
from swarm_engine.store import Ticket
from swarm_engine.store.runs import SkippedStep
from swarm_engine.templating import render

if TYPE_CHECKING:
    from swarm_engine.engine.runner import TicketRunner


class RunFailed(Exception):
    """The run failed; `str(exc)` is its one line (the run's and the ticket's error)."""


class StepFailed(RunFailed):
    def __init__(self, step_id: str, error: str) -> None:
        super().__init__(f"step {step_id!r} failed: {error}")
        self.step_id = step_id
        self.error = error


Queued = tuple[int, Any, JsonText]
"""A step attempt's row written (`queued`): its id, the rendered inputs and their JSON as
the row holds it (what is sent into the VM too)."""


async def execute(
    runner: TicketRunner,
    plan: Plan,
    ticket: Ticket,
    run_id: int,
    context: dict[str, Any],
    queued: dict[str, Queued],
    rowed: set[str],
) -> JsonText:
    """Run the DAG and return the run's result as it is to be stored: the only step's
    outputs (single agent), the workflow's `outputs:` rendered, or else its leaf steps'
    outputs by step id. `queued`: steps whose first attempt's row is already written, by
    step id; `rowed`: each step's id is added to it once a row of it is written, so that
    the run's end records the others as never run (`not_run`: a step whose first row's
    write a cancel cut short is one of them, and gets a row unless that write took one). Raises `StepFailed` for a failed
    step, `RunFailed` (one line: `result: N bytes of JSON, more than the 8 MiB a ticket's
    result may hold (not stored)`) for a result over `bounds.RESULT_BYTES`, which is never
    written."""
    hold_end = len(plan.steps) == 1  # the only step's end goes with the run's end
    pending = dict(plan.steps)
    running: dict[asyncio.Task[tuple[dict[str, Any], JsonText]], str] = {}
    texts: dict[str, JsonText] = {}  # each step's outputs, as its row holds them
    rowed.update(queued)
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
                                hold_end, (before, written), rowed,
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
                    outputs, texts[sid] = task.result()
                    context["steps"][sid] = {"outputs": outputs}
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
    if failure is not None:  # (the steps without a row: recorded with the run's end)
        raise failure
    if plan.workflow is None:  # (measured as the step's outputs, at most 4 MiB)
        return texts[next(iter(plan.steps))]
    try:
        if plan.workflow.outputs is not None:
            try:
                rendered = render(plan.workflow.outputs, context, max_text=RESULT_BYTES)
            except SwarmError as exc:
                raise RunFailed(f"the workflow's outputs: {exc}") from exc
            return result_json(rendered)
        return combined_json({sid: texts[sid] for sid in plan.leaves()})
    except AgentError as exc:
        raise RunFailed(str(exc)) from None


def _release(written: asyncio.Future[None], _task: object = None) -> None:
    """Let the next step write its row: this one's is written, or never will be."""
    if not written.done():
        written.set_result(None)


Order = tuple["asyncio.Future[None] | None", "asyncio.Future[None] | None"]
"""(the row to be written before this step's first, this step's first row written)."""


def not_run(plan: Plan, rowed: set[str]) -> list[SkippedStep]:
    """The steps of `plan` without a row (`rowed`: those with one), in the plan's order:
    recorded `skipped` with the run's end (`RunStore.finish_run`)."""
    return [
        SkippedStep(sid, step.agent.name, step.agent.version, step.agent.kind)
        for sid, step in plan.steps.items()
        if sid not in rowed
    ]


async def _run_step(
    runner: TicketRunner,
    step: PlannedStep,
    context: dict[str, Any],
    ticket: Ticket,
    run_id: int,
    queued: Queued | None,
    hold_end: bool,
    order: Order = (None, None),
    rowed: set[str] | None = None,
) -> tuple[dict[str, Any], JsonText]:
    """The step's attempts, to the outputs of the one that succeeded (with their JSON as
    its row holds them); `queued`: its first attempt's row, if that was written with the
    run's start; `order`: its first row is written once
    `order[0]` is done, and `order[1]` is done once it is (or, by the DAG loop's
    done-callback, once the step ended without); `rowed`: the step's id is added to it
    as a row of it is written."""
    outcome = StepOutcome(error="not run")
    for attempt in range(step.retry.attempts):
        if attempt:
            delay = min(
                step.retry.backoff_seconds * step.retry.backoff_factor ** (attempt - 1),
                step.retry.max_backoff_seconds,
            )
            await asyncio.sleep(delay)
        if attempt == 0 and queued is not None:
            exec_id, inputs, sent = queued
        else:
            exec_id, inputs, sent = await _queue(
                runner, step, context, ticket, run_id, attempt, order if attempt == 0 else None,
                rowed,
            )  # fmt: skip
        runner.events(Event("step_queued", ticket.id, run_id, step.id, {"attempt": attempt}))
        run = StepAttempt(
            runner, step, exec_id, inputs, ticket, run_id, attempt,
            on_held=runner.holder(run_id) if hold_end else None, inputs_json=sent,
        )  # fmt: skip
        outcome = await run.run()
        if outcome.ok and run.outputs_json is not None:
            return outcome.outputs, run.outputs_json
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
    rowed: set[str] | None = None,
) -> Queued:
    """A step attempt's inputs rendered, checked and measured, and its row written
    (`queued`); if the inputs do not render, are refused or are over
    `bounds.STEP_INPUTS_BYTES` or what the run may still store (`bounds.RunBudget`)
    (never written nor sent into a VM), a failed row and `StepFailed` (`inputs: N bytes
    of JSON, more than the 8 MiB a step's inputs may hold`). `order`: see `_run_step`."""

    async def add(
        inputs: dict[str, Any] | JsonText, status: str = "queued", error: str | None = None
    ) -> int:
        """The attempt's row, written as the attempt's ticket's (fenced) write."""
        before, written = order or (None, None)
        if before is not None:  # (`wait`: a cancel of this step leaves `before` alone)
            await asyncio.wait([before])
        try:
            exec_id = await runner.write(
                ticket, runner.store.runs.add_step, run_id, step_id=step.id,
                agent_name=step.agent.name, agent_version=step.agent.version,
                agent_kind=step.agent.kind, inputs=inputs, retry_count=attempt,
                status=status, error=error,
            )  # fmt: skip
            if rowed is not None:  # (a write a cancel cut short may have taken its row
                rowed.add(step.id)  # or not: the run's end writes one only if it did not)
            return exec_id
        finally:
            if written is not None and not written.done():
                written.set_result(None)

    try:
        inputs, sent = await checked_inputs(step, context, runner.checker)
        runner.budget(run_id).charge(sent, "inputs: ")
    except SwarmError as exc:  # (the budget's line names what passed it: a log, say)
        why = str(exc) if isinstance(exc, RunBudgetError) else f"inputs: {exc}"
        await add({}, "failed", why)
        raise StepFailed(step.id, why) from exc
    exec_id = await add(sent)
    return exec_id, inputs, sent
