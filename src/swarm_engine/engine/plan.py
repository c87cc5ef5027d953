"""Turning a ticket into a plan: the steps to run, their agents, inputs and order.

A single-agent ticket is a one-step plan (step id `main`), so it is recorded exactly
like a workflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from swarm_engine.engine.bounds import STEP_INPUTS_BYTES, step_inputs_json
from swarm_engine.errors import ConfigError, NotFoundError
from swarm_engine.models import AgentSpec, RetryPolicy, WorkflowSpec
from swarm_engine.records import JsonText, variables_problem
from swarm_engine.registry import Registry
from swarm_engine.registry.agents import check_agent_command
from swarm_engine.registry.workflows import check_shell_step_inputs, dependencies
from swarm_engine.store import Ticket
from swarm_engine.store.tickets import targetless_draft
from swarm_engine.templating import render

if TYPE_CHECKING:
    from swarm_engine.schema_check import SchemaChecker

SINGLE_STEP_ID = "main"
TICKET_INPUTS = "${inputs}"
"""A single-agent step's inputs template: the ticket's inputs, whole and as they are (data
is never scanned for references; only definitions are templates)."""


@dataclass
class PlannedStep:
    id: str
    agent: AgentSpec
    inputs: Any
    """A template (rendered against the ticket, variables and earlier steps at run time)."""
    needs: set[str]
    timeout_seconds: float
    retry: RetryPolicy


@dataclass
class Plan:
    steps: dict[str, PlannedStep]
    workflow: WorkflowSpec | None = None
    timeout_seconds: float | None = None
    variables: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str | None:
        return self.workflow.name if self.workflow else None

    @property
    def version(self) -> str | None:
        return self.workflow.version if self.workflow else None

    def leaves(self) -> list[str]:
        needed = {d for s in self.steps.values() for d in s.needs}
        return [s for s in self.steps if s not in needed]


def attempts_exceeded(ticket: Ticket, attempt: int, *, claimed: bool = True) -> str | None:
    """One line when `attempt` (1-based: the attempt about to run) is past the ticket's
    `max_attempts`, or is no count at all (the row's `attempts` negative), else None.
    The engine re-queues a ticket only while attempts remain, so an open row past its
    limit was written so by hand: it is failed (`claimed`: by the engine that claimed it,
    after which `ticket reopen` puts it back) or refused (`run-ticket`: it stays open), never
    run as attempt 101 of 3."""
    if 1 <= attempt <= ticket.max_attempts:
        return None
    again = (
        f"'swarm-engine ticket reopen {ticket.id}' counts its attempts from 0 again"
        if claimed
        else f"cancel it, then 'swarm-engine ticket reopen {ticket.id}' counts its attempts"
        " from 0 again"
    )
    if attempt < 1:
        return f"ticket {ticket.id}: attempts is {attempt - 1}, not a count (0 or more); {again}"
    return (
        f"ticket {ticket.id}: this would be attempt {attempt} of at most"
        f" {ticket.max_attempts} (max_attempts); {again}"
    )


def _runnable(agent: AgentSpec) -> AgentSpec:
    """`agent`, if it can run: not a template, and its command one that registration
    would take (the row is untrusted: `registry.agents.check_agent_command`)."""
    if agent.is_template:
        raise ConfigError(f"agent {agent.name!r} is a template; register an agent made from it")
    check_agent_command(agent, f"agent {agent.ref} in the registry")
    return agent


def _targetless(ticket: Ticket, field: str) -> str:
    """Why a ticket whose `field` is empty cannot run: a draft's line as `ticket open`
    says it; another row's (written past the store's CHECK) that it is empty."""
    if ticket.status == "draft":
        return targetless_draft(ticket.id, field, "run")
    return f"ticket {ticket.id}: {field} is empty"


def build_plan(ticket: Ticket, registry: Registry) -> Plan:
    """Resolve a ticket's agent or workflow. Raises NotFoundError / ConfigError (a
    `WorkflowError` for a step of a shell agent embedding a reference inside text in an
    input, or giving its script input any reference:
    `registry.workflows.check_shell_step_inputs`)."""
    ticket_timeout = ticket.timeout_seconds
    if ticket.execution_mode == "single":
        if not ticket.agent_id:
            raise ConfigError(_targetless(ticket, "agent_id"))
        agent = _runnable(registry.agent(ticket.agent_id))
        step = PlannedStep(
            id=SINGLE_STEP_ID,
            agent=agent,
            inputs=TICKET_INPUTS,
            needs=set(),
            timeout_seconds=agent.timeout_seconds,
            retry=agent.retry,
        )
        return Plan({SINGLE_STEP_ID: step}, timeout_seconds=ticket_timeout)
    if not ticket.workflow_id:
        raise ConfigError(_targetless(ticket, "workflow_id"))
    workflow = registry.workflow(ticket.workflow_id)
    deps = dependencies(workflow)
    steps: dict[str, PlannedStep] = {}
    for s in workflow.steps:
        try:
            agent = _runnable(registry.agent(s.agent))
        except NotFoundError as exc:
            raise NotFoundError(f"workflow {workflow.ref}, step {s.id!r}: {exc}") from exc
        steps[s.id] = PlannedStep(
            id=s.id,
            agent=agent,
            inputs=s.inputs,
            needs=deps[s.id],
            timeout_seconds=s.timeout_seconds or agent.timeout_seconds,
            retry=s.retry or agent.retry,
        )
    # the row is untrusted and `name` means the latest version: checked against the agents
    # this plan will run, whatever registration saw
    planned = {s.agent: steps[s.id].agent for s in workflow.steps}
    check_shell_step_inputs(
        workflow, planned.__getitem__, f"workflow {workflow.ref} in the registry"
    )
    variables = dict(workflow.variables)
    problem = variables_problem(ticket.inputs)  # a row is untrusted: never ignored silently
    if problem:
        raise ConfigError(f"ticket {ticket.id}: {problem}")
    variables.update(ticket.inputs.get("variables", {}))
    return Plan(
        steps,
        workflow=workflow,
        timeout_seconds=ticket_timeout or workflow.timeout_seconds,
        variables=variables,
    )


# -- at run time: what a step's templates see, and its inputs -----------------------------
def run_context(plan: Plan, ticket: Ticket) -> dict[str, Any]:
    """What a run's templates see: `${ticket...}`, `${inputs...}`, `${variables...}` and,
    as they finish, `${steps.<id>.outputs...}`."""
    return {
        "ticket": ticket_fields(ticket),
        "inputs": ticket.inputs,
        "variables": plan.variables,
        "steps": {},
    }


def rendered_inputs(step: PlannedStep, context: dict[str, Any]) -> Any:
    """A step's inputs rendered, not checked (raises `SwarmError`): see `checked_inputs`.
    Text its references build is bounded as the inputs are (`render`'s `max_text`)."""
    return render(step.inputs, context, max_text=STEP_INPUTS_BYTES)


async def checked_inputs(
    step: PlannedStep, context: dict[str, Any], checker: SchemaChecker
) -> tuple[Any, JsonText]:
    """A step's inputs rendered, measured, and checked against its agent's `inputs`
    schema, if it has one, by `checker` (on its own thread and helper process: the schema
    and the inputs are rows, untrusted, and a check is bounded in time and memory; the
    event loop and the store thread go on meanwhile); with their JSON as the step's row
    holds them (`bounds.step_inputs_json`: over 8 MiB they are refused before any check,
    write or VM sees them). Raises `SwarmError` with one line: see `SchemaChecker.check`
    (an invalid schema is a `ConfigError` naming the agent) and `step_inputs_json`."""
    inputs = render(step.inputs, context, max_text=STEP_INPUTS_BYTES)
    sent = step_inputs_json(inputs)
    if step.agent.inputs:
        await checker.check_async(step.agent.inputs, inputs, step.agent.ref)
    return inputs, sent


def ticket_fields(ticket: Ticket) -> dict[str, Any]:
    """What agents and templates see of a ticket: `${ticket.<field>}`."""
    return {
        "id": ticket.id,
        "title": ticket.title,
        "description": ticket.description,
        "priority": ticket.priority,
        "inputs": ticket.inputs,
    }
