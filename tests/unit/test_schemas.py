"""`swarm_engine.schemas`: every schema is checked and compiled through one place, whose
references resolve within the schema (or to a meta-schema) and are never retrieved."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from referencing.exceptions import Unresolvable
from tests.support.listener import Listener

from swarm_engine.errors import ConfigError
from swarm_engine.schemas import check_schema, local_registry, unresolvable_ref, validator


def test_the_registry_retrieves_nothing() -> None:
    with Listener() as ear:
        for uri in (f"{ear.url}/s.json", "file:///etc/passwd", "other.json"):
            with pytest.raises(Unresolvable):
                local_registry().resolver().lookup(uri)
    assert ear.received == []


@pytest.mark.parametrize(
    "schema",
    [
        {"$defs": {"a": {"type": "string"}}, "properties": {"x": {"$ref": "#/$defs/a"}}},
        {"$id": "http://x.test/r", "$defs": {"a": {"$id": "a.json"}}, "items": {"$ref": "a.json"}},
        {"$ref": "https://json-schema.org/draft/2020-12/schema"},
        {"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"a": {}},
         "items": {"$ref": "#/definitions/a"}},
    ],
)  # fmt: skip
def test_references_within_the_schema_resolve(schema: dict[str, Any]) -> None:
    assert unresolvable_ref(schema) is None
    check_schema(schema)
    validator(schema).validate(["x"] if "items" in schema else {"x": "y"})


def test_a_reference_from_outside_is_found_where_it_is() -> None:
    schema = {"properties": {"x": {"anyOf": [{"type": "string"}, {"$ref": "other.json"}]}}}
    assert unresolvable_ref(schema) == (["properties", "x", "anyOf", 1], "$ref 'other.json'")
    with pytest.raises(jsonschema.SchemaError) as caught:
        check_schema(schema)
    assert list(caught.value.absolute_path) == ["properties", "x", "anyOf", 1]
    with pytest.raises(ConfigError, match=r"\$ref 'other.json' at \['properties'\]"):
        validator(schema)


def test_a_deep_schema_is_walked_without_recursion() -> None:
    schema: dict[str, Any] = {"$ref": "http://127.0.0.1:9/x"}
    for _ in range(5000):
        schema = {"items": schema}
    found = unresolvable_ref(schema)
    assert found is not None and found[1] == "$ref 'http://127.0.0.1:9/x'"
    assert found[0] == ["items"] * 5000
