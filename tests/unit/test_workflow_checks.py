import re

import pytest

from swarm_engine.errors import WorkflowError
from swarm_engine.models import WorkflowSpec
from swarm_engine.registry.workflows import check_workflow, find_cycle

AGENTS = {"echo", "shell"}


def wf(steps: list[dict[str, object]], **extra: object) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"name": "w", "steps": steps, **extra})


def check(spec: WorkflowSpec) -> None:
    check_workflow(spec, lambda ref: ref.partition("@")[0] in AGENTS, "w.yaml")


def test_valid_dag_passes() -> None:
    check(
        wf(
            [
                {"id": "a", "agent": "echo"},
                {"id": "b", "agent": "echo"},
                {
                    "id": "c",
                    "agent": "echo",
                    "inputs": {"x": "${steps.a.outputs.x}"},
                    "needs": ["b"],
                },
            ]
        )
    )


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"id": "a", "agent": "nope"}], "unknown agent 'nope'"),
        ([{"id": "a", "agent": "echo"}, {"id": "a", "agent": "echo"}], "duplicate step id 'a'"),
        ([{"id": "a", "agent": "echo", "needs": ["a"]}], "'a' depends on itself"),
        (
            [{"id": "a", "agent": "echo", "inputs": {"x": "${steps.a.outputs.y}"}}],
            "'a' depends on itself",
        ),
        ([{"id": "a", "agent": "echo", "needs": ["zz"]}], "unknown step 'zz'"),
        (
            [{"id": "a", "agent": "echo", "inputs": {"x": "${steps.q.outputs.y}"}}],
            "unknown step 'q'",
        ),
        (
            [
                {"id": "a", "agent": "echo", "needs": ["c"]},
                {"id": "b", "agent": "echo", "needs": ["a"]},
                {"id": "c", "agent": "echo", "inputs": {"v": "${steps.b.outputs.v}"}},
            ],
            "dependency cycle: a -> c -> b -> a",
        ),
        ([{"id": "a", "agent": "echo", "inputs": {"x": "${secrets.k}"}}], "unknown namespace"),
        ([{"id": "a", "agent": "echo", "inputs": {"x": "${steps.b}"}}], "must look like"),
        ([], "at least one step"),
        (  # a key is never rendered: a `${` in one (an escape too) is refused
            [{"id": "a", "agent": "echo", "inputs": {"n": {"${inputs.k}": 1}}}],
            "inputs.n: the key '${inputs.k}' holds",
        ),
        ([{"id": "a", "agent": "echo", "inputs": {"$${x}": 1}}], "the key '$${x}' holds"),
        ([{"id": "a", "agent": "echo", "inputs": {"l": [{"${": 1}]}}], "inputs.l.0: the key"),
    ],
)
def test_invalid_workflows_name_the_problem(steps: list[dict[str, object]], message: str) -> None:
    with pytest.raises(WorkflowError, match=re.escape(message)):
        check(wf(steps))


def test_find_cycle_none_for_a_dag() -> None:
    assert find_cycle({"a": set(), "b": {"a"}, "c": {"a", "b"}}) is None


def test_a_key_with_a_reference_in_the_outputs_is_refused() -> None:
    spec = wf([{"id": "a", "agent": "echo"}], outputs={"${ticket.title}": "${steps.a.outputs.x}"})
    with pytest.raises(WorkflowError, match=r"outputs: the key '\$\{ticket.title\}' holds"):
        check(spec)


def test_a_step_id_over_64_characters_says_its_limit() -> None:
    wf([{"id": "a" * 64, "agent": "echo"}])
    with pytest.raises(ValueError, match="at most 64 characters in all \\(this one has 65\\)"):
        wf([{"id": "a" * 65, "agent": "echo"}])
