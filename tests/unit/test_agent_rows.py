"""What an agent row or a ticket row holds is checked where it is read: env names, the
inputs schema (with the validator's own `check_schema`), a ticket's `inputs.variables`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from swarm_engine.engine.plan import PlannedStep, checked_inputs
from swarm_engine.errors import ConfigError
from swarm_engine.models import AgentSpec, RetryPolicy
from swarm_engine.records import ENV_MAX_VARS, variables_problem
from swarm_engine.registry.plain import plain_agent
from swarm_engine.schema_check import SchemaChecker


@pytest.fixture(scope="module")
def checker() -> Iterator[SchemaChecker]:
    checking = SchemaChecker()
    yield checking
    checking.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"A=B": "x"}, "'A=B' is not an environment variable name"),
        ({"1A": "x"}, "'1A' is not"),
        ({"A\n": "x"}, "is not an environment variable name"),
        ({"": "x"}, "'' is not"),
        ({"É": "x"}, "'É' is not"),
        ({"A": "x\x00y"}, "the value of 'A' contains a NUL character"),
        ({f"V{n}": "1" for n in range(ENV_MAX_VARS + 1)}, f"over {ENV_MAX_VARS}"),
    ],
)
def test_an_agent_env_is_checked_whenever_the_definition_is_read(
    env: dict[str, str], message: str
) -> None:
    raw = json.dumps({"name": "a", "version": "1.0.0", "kind": "shell", "env": env})
    assert plain_agent(raw) is None  # the quick check leaves it to the model
    with pytest.raises(ValidationError, match=message):
        AgentSpec.model_validate_json(raw)


def test_a_good_env_is_plain_and_valid() -> None:
    raw = json.dumps({"name": "a", "kind": "shell", "env": {"_A1": "x=y", "b": ""}})
    assert plain_agent(raw) == ("a", "1.0.0", "shell")
    assert AgentSpec.model_validate_json(raw).env == {"_A1": "x=y", "b": ""}


def step_with(schema: dict[str, Any]) -> PlannedStep:
    agent = AgentSpec(name="a", kind="shell", inputs=schema)
    return PlannedStep("main", agent, "${inputs}", set(), 1.0, RetryPolicy())


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": 5}, "agent a@1.0.0: inputs.type: not a valid JSON Schema: 5 is not valid"),
        (
            {"type": "object", "properties": {"k": {"type": "string", "pattern": "(("}}},
            "inputs.properties.k.pattern: not a valid JSON Schema: '((' is not a 'regex'",
        ),
        ({"patternProperties": {"((": {}}}, "inputs.patternProperties: not a valid JSON Schema"),
        ({"minLength": -1}, "inputs.minLength: not a valid JSON Schema"),
    ],
)
def test_an_invalid_input_schema_is_one_line_naming_the_agent(
    schema: dict[str, Any], message: str, checker: SchemaChecker
) -> None:
    context = {"inputs": {"k": "v"}, "ticket": {}, "variables": {}, "steps": {}}
    with pytest.raises(ConfigError) as caught:
        asyncio.run(checked_inputs(step_with(schema), context, checker))
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        ({}, None),
        ({"variables": {}}, None),
        ({"variables": {"a": 1}}, None),
        ({"variables": 5}, "inputs.variables must be a JSON object, not a number"),
        ({"variables": [1, 2]}, "not an array"),
        ({"variables": None}, "not null"),
        ({"variables": "x"}, "not a string"),
        ({"variables": True}, "not a boolean"),
    ],
)
def test_a_ticket_variables_must_be_an_object(inputs: dict[str, Any], problem: str | None) -> None:
    found = variables_problem(inputs)
    assert found == problem if problem is None else problem in str(found)
