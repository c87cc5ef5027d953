"""A workflow's dependencies are walked without recursion (a row may hold any number of
steps in any order), and a workflow has at most `MAX_STEPS` steps."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from swarm_engine.errors import ConfigError
from swarm_engine.models import MAX_STEPS, WorkflowSpec
from swarm_engine.registry.workflows import check_workflow, find_cycle


def chain(n: int, *, closed: bool = False) -> dict[str, set[str]]:
    """s_i needs s_{i+1} (the order a recursive walk goes deepest); `closed`: and the
    last needs the first."""
    deps = {f"s{i}": {f"s{i + 1}"} for i in range(n - 1)}
    deps[f"s{n - 1}"] = {"s0"} if closed else set()
    return deps


def test_a_long_backward_chain_is_walked_without_recursion() -> None:
    assert find_cycle(chain(50_000)) is None
    cycle = find_cycle(chain(50_000, closed=True))
    assert cycle is not None and len(cycle) == 50_001 and cycle[0] == cycle[-1]


@given(
    st.dictionaries(
        st.sampled_from([f"s{i}" for i in range(8)]),
        st.sets(st.sampled_from([f"s{i}" for i in range(8)]), max_size=3),
        max_size=8,
    )
)
def test_a_cycle_found_is_one_and_none_found_means_an_order_exists(
    deps: dict[str, set[str]],
) -> None:
    deps = {k: {d for d in v if d in deps} for k, v in deps.items()}
    cycle = find_cycle(deps)
    if cycle is None:  # an order in which every step comes after what it needs
        done: set[str] = set()
        while len(done) < len(deps):
            ready = {k for k, v in deps.items() if k not in done and v <= done}
            assert ready, deps
            done |= ready
    else:  # each step needs the next; the first is repeated at the end
        assert cycle[0] == cycle[-1] and len(cycle) >= 2
        assert all(b in deps[a] for a, b in itertools.pairwise(cycle))


def workflow_of(steps: list[dict[str, Any]]) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"name": "w", "steps": steps})


def test_the_largest_workflow_in_backward_order_is_checked() -> None:
    steps: list[dict[str, Any]] = [
        {"id": f"s{i}", "agent": "echo", "needs": [f"s{i + 1}"]} for i in range(MAX_STEPS - 1)
    ]
    steps.append({"id": f"s{MAX_STEPS - 1}", "agent": "echo"})
    check_workflow(workflow_of(steps), lambda ref: True, "w.yaml")
    steps[-1] = {**steps[-1], "needs": ["s0"]}
    with pytest.raises(ConfigError, match=r"dependency cycle: s0 -> s1 -> s2 -> .* -> s0$"):
        check_workflow(workflow_of(steps), lambda ref: True, "w.yaml")


def test_a_workflow_has_at_most_max_steps() -> None:
    steps = [{"id": f"s{i}", "agent": "echo"} for i in range(MAX_STEPS + 1)]
    with pytest.raises(ValidationError, match=f"at most {MAX_STEPS} items"):
        workflow_of(steps)
