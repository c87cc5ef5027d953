"""Workflow checks at registration: references, dependencies, cycles, the inputs of shell
steps; and step order."""

from __future__ import annotations

from collections.abc import Callable
from graphlib import CycleError, TopologicalSorter

from swarm_engine.agents.shell_step_inputs import shell_step_problem
from swarm_engine.cronrules import per_minute
from swarm_engine.errors import ConfigError, WorkflowError
from swarm_engine.models import AgentSpec, WorkflowSpec
from swarm_engine.records import shown, split_ref
from swarm_engine.templating import check_template, references, step_dependencies

NAME_SHOWN = 80
"""How much of a name (an agent's, a step's) a line of `check_workflow` quotes (`shown`):
a row's name of any size makes a line short enough to read whole."""
CYCLE_SHOWN = 6
"""The most step ids a cycle's line lists before `… (N more steps)` and its first again."""


def _name(value: str) -> str:
    return shown(value, NAME_SHOWN)


def dependencies(spec: WorkflowSpec) -> dict[str, set[str]]:
    """step id -> the steps it waits for (explicit `needs` plus `${steps.*}` references)."""
    return {s.id: set(s.needs) | step_dependencies(s.inputs) for s in spec.steps}


def check_workflow(spec: WorkflowSpec, agent_exists: Callable[[str], bool], source: str) -> None:
    """Raise `WorkflowError` with one clear line for the first problem found."""
    if not spec.steps:
        raise WorkflowError(f"{source}: a workflow needs at least one step")
    seen: set[str] = set()
    for step in spec.steps:
        if step.id in seen:
            raise WorkflowError(f"{source}: duplicate step id {_name(step.id)}")
        seen.add(step.id)
    for step in spec.steps:
        if step.agent.startswith("_template:"):
            raise WorkflowError(
                f"{source}: step {_name(step.id)}: {_name(step.agent)} is a template"
            )
        try:
            split_ref(step.agent)
        except ConfigError as exc:
            raise WorkflowError(f"{source}: step {_name(step.id)}: agent {exc}") from None
        if not agent_exists(step.agent):
            raise WorkflowError(
                f"{source}: step {_name(step.id)}: unknown agent {_name(step.agent)}"
            )
        problem = check_template(step.inputs, where="inputs")
        if problem:
            raise WorkflowError(f"{source}: step {_name(step.id)}: {problem[0]}: {problem[1]}")
        for dep in sorted(set(step.needs) | step_dependencies(step.inputs)):
            if dep == step.id:
                raise WorkflowError(f"{source}: step {_name(step.id)} depends on itself")
            if dep not in seen:
                raise WorkflowError(
                    f"{source}: step {_name(step.id)} references unknown step {_name(dep)}"
                )
    problem = check_template(spec.outputs or {}, where="outputs")
    if problem:
        raise WorkflowError(f"{source}: {problem[0]}: {problem[1]}")
    for path in references(spec.outputs or {}):
        if path.startswith("steps.") and path.split(".")[1] not in seen:
            raise WorkflowError(
                f"{source}: outputs reference unknown step {_name(path.split('.')[1])}"
            )
    cycle = find_cycle(dependencies(spec))
    if cycle:
        listed = cycle if len(cycle) <= CYCLE_SHOWN + 2 else [
            *cycle[:CYCLE_SHOWN], f"… ({len(cycle) - 1 - CYCLE_SHOWN:,} more steps)", cycle[-1]
        ]  # fmt: skip
        shown_cycle = " -> ".join(listed)
        raise WorkflowError(f"{source}: dependency cycle: {shown_cycle}")
    names: set[str] = set()
    for trigger in spec.triggers:
        if trigger.name in names:
            raise WorkflowError(f"{source}: trigger {_name(trigger.name)} is defined twice")
        names.add(trigger.name)
        if (trigger.cron is None) == (not trigger.webhook):
            raise WorkflowError(
                f"{source}: trigger {_name(trigger.name)} needs exactly one of cron or webhook: true"
            )
        times = 0 if trigger.cron is None or trigger.sub_minute else per_minute(trigger.cron)
        if times > 1:  # (each firing is a ticket: cronrules.py)
            raise WorkflowError(
                f"{source}: trigger {_name(trigger.name)} fires up to {times} times a minute"
                f" ({shown(trigger.cron, 40)}: up to {times * 1440:,} tickets a day); a"
                " schedule fires at most once a minute unless its trigger says sub_minute: true"
            )


def check_shell_step_inputs(
    spec: WorkflowSpec, agent_of: Callable[[str], AgentSpec], source: str
) -> None:
    """Raise `WorkflowError` (`<source>: step '<id>': inputs.<key>: ...`, one line with the
    fix) for the first step whose agent is of kind `shell` and whose inputs embed a
    reference inside text, or whose script input (`inputs.command` of the built-in
    `shell` agent) holds any reference (`agents.shell_step_inputs`). `agent_of` gives a step's agent
    (registration: the registry's latest or named version; at run time: the agent the plan
    resolved); its errors pass through. Run at registration and again on every plan: a
    registry row is written by anyone, and `name` (the latest version) may come to mean a
    shell agent."""
    for step in spec.steps:
        problem = shell_step_problem(step.inputs, agent_of(step.agent))
        if problem:
            raise WorkflowError(f"{source}: step {_name(step.id)}: {problem}")


def find_cycle(deps: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of step ids, each needing the next (the first repeated at the
    end), or None. No recursion: a workflow's steps are user-sized (a row written by any
    SQLite client may hold thousands), so `graphlib` walks them."""
    graph: TopologicalSorter[str] = TopologicalSorter()
    for node, needs in deps.items():
        graph.add(node, *sorted(needs))
    try:
        graph.prepare()
    except CycleError as exc:
        cycle: list[str] = list(exc.args[1])
        return cycle[::-1]  # graphlib lists each step before the ones that need it
    return None
