"""The bounded schema checker (`swarm_engine.schema_check`): a helper process that decides
exactly as jsonschema does, within a time limit; a check over the limit fails alone with
one line, and the next check gets a fresh helper."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.cli import wait_until

from swarm_engine.errors import AgentError, ConfigError, InputsInvalidError, SchemaCheckError
from swarm_engine.schema_check import SchemaChecker
from swarm_engine.schemas import validator
from swarm_engine.vm.proctree import pid_alive

BACKTRACKS = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}}}
UNIQUE = {"type": "object", "properties": {"items": {"type": "array", "uniqueItems": True}}}
DRAFT4 = "http://json-schema.org/draft-04/schema#"
SMALL = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}


@pytest.fixture(scope="module")
def checker() -> Iterator[SchemaChecker]:
    checking = SchemaChecker()
    yield checking
    checking.close()


# -- the same answers as jsonschema ---------------------------------------------------------
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 12)
    | st.sampled_from([0.5, 1.0, 2.5])
    | st.text("abx09 !", max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from("abc"), inner, max_size=3)
    ),
    max_leaves=8,
)
TYPES = ["null", "boolean", "integer", "number", "string", "array", "object"]
keywords = st.one_of(
    st.builds(
        lambda t: {"type": t},
        st.sampled_from(TYPES)
        | st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True),
    ),
    st.builds(lambda n: {"minimum": n}, st.integers(-2, 5)),
    st.builds(lambda n: {"exclusiveMaximum": n}, st.integers(-2, 5)),
    st.builds(lambda n: {"multipleOf": n}, st.sampled_from([2, 3, 0.5])),
    st.builds(lambda n: {"minLength": n}, st.integers(0, 3)),
    st.builds(lambda n: {"maxLength": n}, st.integers(0, 3)),
    st.builds(lambda p: {"pattern": p}, st.sampled_from(["^a", "b$", "^[0-9]+$", "x", "^(a|b)*$"])),
    st.builds(lambda v: {"enum": v}, st.lists(values, min_size=1, max_size=3)),
    st.builds(lambda v: {"const": v}, values),
    st.builds(lambda b: {"uniqueItems": b}, st.booleans()),
    st.builds(lambda n: {"minItems": n}, st.integers(0, 3)),
    st.builds(lambda n: {"maxProperties": n}, st.integers(0, 2)),
    st.builds(lambda r: {"required": r}, st.lists(st.sampled_from("abc"), max_size=2, unique=True)),
    st.builds(lambda p: {"propertyNames": {"pattern": p}}, st.sampled_from(["^a", "^[ab]$"])),
)


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return merged


schemas = st.recursive(
    st.lists(keywords, max_size=3).map(combine) | st.booleans(),
    lambda inner: st.one_of(
        st.builds(
            lambda p: {"properties": p}, st.dictionaries(st.sampled_from("abc"), inner, max_size=2)
        ),
        st.builds(lambda s: {"items": s}, inner),
        st.builds(lambda s: {"additionalProperties": s}, inner),
        st.builds(lambda s: {"anyOf": s}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda s: {"allOf": s}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda s: {"oneOf": s}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda s: {"not": s}, inner),
        st.builds(
            lambda a, b: {**a, **b},
            st.lists(keywords, max_size=2).map(combine),
            inner.filter(lambda s: isinstance(s, dict)),
        ),
    ),
    max_leaves=6,
).map(lambda s: s if isinstance(s, dict) else {"not": {"not": s}})


def direct(schema: dict[str, Any], value: Any) -> str | None:
    """jsonschema's own answer, in this process: None (valid) or its message."""
    try:
        validator(schema).validate(value)
    except jsonschema.ValidationError as exc:
        return exc.message
    return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas, value=values)
def test_it_decides_as_jsonschema_does(checker: SchemaChecker, schema: Any, value: Any) -> None:
    expected = direct(schema, value)
    if expected is None:
        checker.check(schema, value, "a@1")
    else:
        with pytest.raises(InputsInvalidError) as refused:
            checker.check(schema, value, "a@1")
        # one of jsonschema's own messages: which comes first may differ between two
        # processes (it walks some keywords' keys as a set, ordered by string hashes)
        messages = {e.message for e in validator(schema).iter_errors(value)}
        assert str(refused.value) in messages, (schema, value)


def test_a_schema_that_is_not_one_is_a_config_error_naming_the_agent(
    checker: SchemaChecker,
) -> None:
    with pytest.raises(ConfigError) as caught:
        checker.check({"type": 5}, {}, "a@1.0.0")
    assert str(caught.value).startswith("agent a@1.0.0: inputs.type: not a valid JSON Schema")
    with pytest.raises(AgentError, match="does not resolve"):
        checker.check({"$ref": "http://127.0.0.1:9/s.json"}, {}, "a@1.0.0")
    with pytest.raises(AgentError, match="validating recursed too deep"):
        checker.check({"$ref": "#"}, {}, "a@1.0.0")


def test_a_long_message_is_one_cut_line(checker: SchemaChecker) -> None:
    with pytest.raises(InputsInvalidError) as caught:
        checker.check({"uniqueItems": True}, ["x\ny"] * 5000, "a@1")
    message = str(caught.value)
    assert len(message) <= 500 and "\n" not in message, message
    assert message.endswith("… (40,000 characters) has non-unique elements"), message


def test_a_value_that_is_not_json_is_refused(checker: SchemaChecker) -> None:
    with pytest.raises(SchemaCheckError, match="not JSON"):
        checker.check(SMALL, {"n": {1, 2}}, "a@1")


# -- bounded ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("schema", "value"),
    [
        (BACKTRACKS, {"code": "a" * 34 + "!"}),
        (UNIQUE, {"items": [{"n": i} for i in range(6000)]}),
    ],
    ids=["backtracking pattern", "uniqueItems over 6000 objects"],
)
def test_a_check_over_the_limit_fails_alone_and_the_next_one_is_made(
    schema: dict[str, Any], value: Any
) -> None:
    checker = SchemaChecker(limit=0.5)
    try:
        checker.check(SMALL, {"n": 1}, "a@1")
        first = helper_pid(checker)
        with pytest.raises(SchemaCheckError) as caught:
            checker.check(schema, value, "costly@1.0.0")
        assert str(caught.value) == (
            "could not be checked against agent costly@1.0.0's schema within 0.5 s"
            " (a schema or input too costly to check)"
        )
        assert not pid_alive(first)  # killed (and reaped)
        checker.check(SMALL, {"n": 2}, "a@1")  # a new helper
        with pytest.raises(InputsInvalidError, match="'two' is not of type 'integer'"):
            checker.check(SMALL, {"n": "two"}, "a@1")
        assert helper_pid(checker) != first
    finally:
        checker.close()


def test_a_helper_that_died_between_checks_is_replaced() -> None:
    checker = SchemaChecker()
    try:
        checker.check(SMALL, {"n": 1}, "a@1")
        pid = helper_pid(checker)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10, "the helper to die")
        checker.check(SMALL, {"n": 1}, "a@1")
        assert helper_pid(checker) != pid
    finally:
        checker.close()


def test_after_close_nothing_is_accepted() -> None:
    checker = SchemaChecker()
    checker.check(SMALL, {"n": 1}, "a@1")
    pid = helper_pid(checker)
    checker.close()
    assert not pid_alive(pid)
    with pytest.raises(SchemaCheckError, match="closed"):
        checker.check(SMALL, {"n": 1}, "a@1")
    with pytest.raises(SchemaCheckError, match="closed"):
        asyncio.run(checker.check_async(SMALL, {"n": 1}, "a@1"))


def helper_pid(checker: SchemaChecker) -> int:
    proc = checker._proc  # the helper's pid is not part of the interface
    assert proc is not None
    return proc.pid


def test_a_costly_check_holds_one_helper_and_the_others_go_on() -> None:
    """With two helpers, checks made while a costly one runs are answered before it fails
    (with one helper they would wait for it: `limit` seconds each)."""
    checker = SchemaChecker(limit=3, size=2)
    try:
        with ThreadPoolExecutor(1) as pool:
            costly = pool.submit(checker.check, BACKTRACKS, {"code": "a" * 34 + "!"}, "c@1")
            wait_until(lambda: len(checker._helpers) == 1, 30, "the costly check to start")
            for n in range(5):
                checker.check(SMALL, {"n": n}, "a@1")
            assert not costly.done()  # still being checked: the good ones did not wait
            with pytest.raises(SchemaCheckError, match="within 3 s"):
                costly.result(timeout=30)
        assert len(checker._helpers) == 1  # the costly one's helper killed, not replaced yet
    finally:
        checker.close()


def test_close_cancels_the_checks_not_yet_started() -> None:
    """A check waiting for a helper when the checker closes fails at once: not run."""
    checker = SchemaChecker(limit=30, size=1)
    with ThreadPoolExecutor(2) as pool:
        costly = pool.submit(checker.check, BACKTRACKS, {"code": "a" * 34 + "!"}, "c@1")
        wait_until(lambda: len(checker._helpers) == 1, 30, "the costly check to start")
        waiting = pool.submit(checker.check, SMALL, {"n": 1}, "a@1")
        checker.close()
        for future in (costly, waiting):
            with pytest.raises(SchemaCheckError, match="closed"):
                future.result(timeout=10)  # not after the 30 s the costly check may take


def test_a_schema_itself_is_checked_in_a_helper_within_the_limit() -> None:
    """Checking a schema against its meta-schema may be quadratic (a draft-04 `enum` is
    `uniqueItems`): past the limit it is refused with one line, not run on."""
    checker = SchemaChecker(limit=0.5)
    try:
        checker.check_schema(SMALL, "inputs")
        with pytest.raises(ConfigError, match=r"^inputs.type: not a valid JSON Schema: "):
            checker.check_schema({"type": "integr"}, "inputs")
        enum = {"$schema": DRAFT4, "enum": [{"a": i} for i in range(3000)]}
        with pytest.raises(ConfigError) as caught:
            checker.check_schema(enum, "inputs")
        assert str(caught.value) == "inputs: the schema could not be checked within 0.5 s"
        checker.check_schema(SMALL, "outputs")  # a new helper
    finally:
        checker.close()
