"""The quick check of plain agent definitions (registry/plain.py) against the model it
stands in for (`AgentSpec`, models.py): the same fields, defaults and bounds, and for any
stored row the same outcome as decoding it with the model, the same error included."""

from __future__ import annotations

import json
import typing
from typing import Any

import annotated_types
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import Discriminator
from pydantic.types import AllowInfNan, Strict

from swarm_engine import models
from swarm_engine.errors import ConfigError
from swarm_engine.models import AgentSpec
from swarm_engine.registry.builtins import builtin_agents
from swarm_engine.registry.catalog import check_agent_row, decode_definition
from swarm_engine.registry.plain import BOUNDS, DEFAULTS, MODELS, plain_agent

BOUND_NAMES = {annotated_types.Ge: "ge", annotated_types.Gt: "gt", annotated_types.Le: "le"}


def bounds_of(metadata: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, Strict | AllowInfNan | Discriminator):  # held to the rules below
            continue
        name = BOUND_NAMES.get(type(item))
        assert name is not None, f"a rule the quick check does not know: {item!r}"
        out[name] = getattr(item, name)
    return out


def test_the_quick_check_knows_every_field_and_bound_of_the_models() -> None:
    found: dict[str, dict[str, Any]] = {}
    for model_name, fields in MODELS.items():
        model = getattr(models, model_name)
        assert set(model.model_fields) == set(fields), model_name
        for name, info in model.model_fields.items():
            bounds = bounds_of(info.metadata)
            if name == "allowed_ports":  # tuple[Annotated[int, Field(...)], ...]: each port
                item = typing.get_args(info.annotation)[0]
                bounds = bounds_of(typing.get_args(item)[1].metadata)
            if bounds:
                found[f"{model_name}.{name}"] = bounds
    assert found == BOUNDS
    for name, default in DEFAULTS.items():
        assert AgentSpec.model_fields[name].default == default


def test_the_models_are_as_strict_as_the_quick_check() -> None:
    """The quick check takes only an exact int for `int`, a bool for `bool` and a finite
    number for `float`: the models take no more (`true` is no 1, `'5'` no 5, `'30'` no 30
    seconds, `.inf` no budget), so a value is refused alike whether the quick check or the
    model decides."""
    for model_name, fields in MODELS.items():
        model = getattr(models, model_name)
        for name, rule in fields.items():
            info = model.model_fields[name]
            rule = rule.rstrip("?")
            if rule in ("int", "bool", "float"):
                assert Strict(True) in info.metadata, f"{model_name}.{name}: not strict"
            if rule == "float":
                bounds = BOUNDS[f"{model_name}.{name}"]
                finite = AllowInfNan(False) in info.metadata
                assert finite or "le" in bounds, f"{model_name}.{name}: takes .inf"


def test_built_in_and_registered_definitions_are_plain() -> None:
    specs = [
        *builtin_agents(),
        AgentSpec(
            name="full",
            version="2.1",
            kind="shell",
            command=["sh", "-c", "true"],
            env={"A": "é"},
            vm={"backend": "qemu", "memory_mb": 128, "allowed_ports": [80, 443], "image": "x.y"},
            retry={"attempts": 3, "backoff_seconds": 0},
            model_api={"budget": {"max_tokens": 10, "max_usd": 0.5}},
            output_files=["out.txt"],
            package_path="/p",
            package_digest="sha256:00",
        ),
    ]
    for spec in specs:  # as `agent register` stores them
        assert plain_agent(spec.model_dump_json()) == (spec.name, spec.version, spec.kind)


@pytest.mark.parametrize(
    "raw",
    [
        '{"name": "a", "config": {"x": NaN}}',  # valid, but NaN is left to the model
        '{"name": "a", "name": "a"}',  # a key twice
        '{"name": "a", "config": {"x": "\\ud800"}}',  # a lone surrogate: the model refuses
        '{"name": "a", "config": %s}' % ("[" * 250 + "]" * 250),  # too deep for the model
        '{"name": "a", "memory_mb": 512.0}',  # not plain (the model refuses it too)
        '{"name": "a", "memory_mb": "512"}',
        '{"name": "a", "model_api": 1}',
        '{"name": "a", "unknown": 1}',
        '{"name": "a", "command": ""}',  # no program: the model refuses these
        '{"name": "a", "command": "   "}',
        '{"name": "a", "command": []}',
        '{"name": "a", "command": [""]}',
        '{"name": "a", "command": [" ", "x"]}',
        '{"version": "1.0.0"}',
        "[1, 2]",
        "not json",
    ],
)
def test_what_is_not_plain_is_left_to_the_model(raw: str) -> None:
    assert plain_agent(raw) is None


class FakeRow:
    """A registry row as the store gives it (`row["spec"]`, `row.keys()`)."""

    def __init__(self, **values: Any) -> None:
        self.values = values

    def keys(self) -> list[str]:
        return list(self.values)

    def __getitem__(self, key: int | str, /) -> Any:
        return self.values[key] if isinstance(key, str) else list(self.values.values())[key]


def outcome(check: typing.Callable[[], object]) -> str:
    try:
        check()
    except ConfigError as exc:
        return f"error: {exc}"
    return "ok"


TEXT = st.one_of(
    st.text(max_size=5),
    st.sampled_from(["\ud800", "é", "a\n", "\x00", "x" * 64, "1.0.0", "A"]),
)
NAMES = st.one_of(
    st.sampled_from(["a", "echo", "_template:t", "a.b-c_1", "a" * 63, "a" * 64, "A", "a\n", ""]),
    TEXT,
)
ENV_NAMES = st.one_of(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,4}", fullmatch=True),
    st.sampled_from(["A=B", "1A", "A\n", "", "É", "A\x00"]),
)
VERSIONS = st.one_of(st.sampled_from(["1.0.0", "1", "2.0+b", "x" * 33, "1.0.0\n", "-1"]), TEXT)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)
DEEP = st.sampled_from([30, 31, 32, 33, 199, 200]).map(
    lambda depth: json.loads("[" * depth + "]" * depth)
)


def near(least: float, most: float) -> st.SearchStrategy[Any]:
    """Numbers about a field's bounds, ints and floats."""
    return st.one_of(
        st.sampled_from([least, most]),
        st.integers(int(least) - 2, int(least) + 2),
        st.integers(int(most) - 2, int(most) + 2),
        st.floats(least - 1, most + 1),
        st.sampled_from([-0.0, 1e999]),
    )


def mostly_within(least: float, most: float, *, whole: bool = False) -> st.SearchStrategy[Any]:
    """Numbers within a field's bounds (ints only when `whole`), sometimes about them."""
    within = st.integers(int(least), int(most))
    if not whole:
        within = st.one_of(within, st.floats(least, most))
    return st.one_of(within, within, within, near(least, most))


def numbers(least: float, most: float) -> st.SearchStrategy[Any]:
    """`near`, and as floats, as text or bools."""
    close = near(least, most)
    return st.one_of(close, close.map(float), close.map(str), st.booleans())


def block(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """A nested model's object: likely values, or anything, or an unknown key."""
    return st.one_of(
        st.fixed_dictionaries({}, optional=fields),
        st.fixed_dictionaries({}, optional={n: st.one_of(v, JSON) for n, v in fields.items()}),
        st.dictionaries(st.sampled_from([*fields, "unknown"]), JSON, max_size=2),
        JSON,
    )


PLAIN_TEXT = st.text(st.characters(codec="utf-8"), max_size=5)
PLAIN_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64),
        st.floats(allow_nan=False, allow_infinity=False),
        PLAIN_TEXT,
        st.sampled_from([2**64, -(2**63) - 1, float("nan")]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(PLAIN_TEXT, inner, max_size=3)
    ),
    max_leaves=8,
)
LIKELY_PLAIN: dict[str, st.SearchStrategy[Any]] = {
    "version": VERSIONS,
    "description": PLAIN_TEXT,
    "kind": st.one_of(st.sampled_from(["shell", "echo", "claude"]), PLAIN_TEXT),
    "command": st.one_of(
        st.none(),
        PLAIN_TEXT,
        st.lists(PLAIN_TEXT, max_size=2),
        st.sampled_from(["", " \t ", [], [""], ["  ", "x"], ["x", ""]]),  # (blank programs)
    ),
    "entry": st.one_of(st.none(), PLAIN_TEXT),
    "inputs": st.dictionaries(PLAIN_TEXT, PLAIN_JSON, max_size=3),
    "outputs": st.dictionaries(PLAIN_TEXT, st.one_of(PLAIN_JSON, DEEP), max_size=2),
    "memory_mb": mostly_within(16, 65536, whole=True),
    "vcpus": mostly_within(1, 64, whole=True),
    "timeout_seconds": mostly_within(0, 7 * 24 * 3600),
    "env": st.dictionaries(st.one_of(ENV_NAMES, PLAIN_TEXT), PLAIN_TEXT, max_size=2),
    "vm": st.fixed_dictionaries(
        {},
        optional={
            "backend": st.one_of(st.none(), PLAIN_TEXT),
            "memory_mb": st.one_of(st.none(), mostly_within(16, 65536, whole=True)),
            "vcpus": st.one_of(st.none(), mostly_within(1, 64, whole=True)),
            "network": st.booleans(),
            "allowed_ports": st.lists(
                st.one_of(mostly_within(1, 65535, whole=True), st.just(80)), max_size=3
            ),
            "image": st.one_of(st.none(), st.sampled_from(["a.b", "../x", "a/b", "x\n", "a"])),
        },
    ),
    "retry": st.fixed_dictionaries(
        {},
        optional={
            "attempts": mostly_within(1, 20, whole=True),
            "backoff_seconds": mostly_within(0, 3600),
            "backoff_factor": mostly_within(1, 10),
            "max_backoff_seconds": st.one_of(mostly_within(0, 1), st.integers(2**63, 2**65)),
        },
    ),
    "config": st.dictionaries(PLAIN_TEXT, st.one_of(PLAIN_JSON, DEEP), max_size=3),
    "output_files": st.lists(
        st.one_of(PLAIN_TEXT, st.sampled_from(["out.txt", ".", "", "./", "a/..", "out/", "../x"])),
        max_size=2,
    ),
    "model_api": st.one_of(
        st.booleans(),
        st.fixed_dictionaries(
            {},
            optional={
                "budget": st.fixed_dictionaries(
                    {},
                    optional={
                        "max_tokens": mostly_within(0, 10, whole=True),
                        "max_usd": mostly_within(0, 1),
                    },
                )
            },
        ),
    ),
    "package_path": st.one_of(st.none(), PLAIN_TEXT),
    "package_digest": st.one_of(st.none(), PLAIN_TEXT),
}
"""Values of the plain types, about the bounds: mostly plain, some out of bounds."""
BUDGET = block({"max_tokens": numbers(0, 10), "max_usd": numbers(0, 1)})
LIKELY: dict[str, st.SearchStrategy[Any]] = {
    "name": NAMES,
    "version": st.one_of(VERSIONS, st.integers(0, 2), st.just(1.0)),
    "description": st.one_of(TEXT, st.none(), st.integers(0, 1)),
    "kind": st.one_of(st.sampled_from(["shell", "echo", "claude"]), TEXT, st.none()),
    "command": st.one_of(
        st.none(), TEXT, st.lists(TEXT, max_size=2), st.lists(SCALARS, max_size=2)
    ),
    "entry": st.one_of(st.none(), TEXT),
    "inputs": st.one_of(st.dictionaries(TEXT, JSON, max_size=3), JSON),
    "outputs": st.dictionaries(TEXT, st.one_of(JSON, DEEP), max_size=2),
    "memory_mb": numbers(16, 65536),
    "vcpus": numbers(1, 64),
    "timeout_seconds": numbers(0, 7 * 24 * 3600),
    "env": st.dictionaries(st.one_of(ENV_NAMES, TEXT), st.one_of(TEXT, SCALARS), max_size=2),
    "vm": block(
        {
            "backend": st.one_of(st.none(), TEXT, st.integers(0, 1)),
            "memory_mb": st.one_of(st.none(), numbers(16, 65536)),
            "vcpus": st.one_of(st.none(), numbers(1, 64)),
            "network": st.one_of(st.booleans(), st.integers(0, 1), st.sampled_from(["true"])),
            "allowed_ports": st.lists(st.one_of(numbers(1, 65535), numbers(80, 80)), max_size=3),
            "image": st.one_of(st.none(), TEXT, st.sampled_from(["a.b", "../x", "a/b", "x\n"])),
        }
    ),
    "retry": block(
        {
            "attempts": numbers(1, 20),
            "backoff_seconds": numbers(0, 3600),
            "backoff_factor": numbers(1, 10),
            "max_backoff_seconds": st.one_of(numbers(0, 1), st.integers(2**63, 2**65)),
        }
    ),
    "config": st.one_of(st.dictionaries(TEXT, st.one_of(JSON, DEEP), max_size=3), JSON),
    "output_files": st.one_of(st.lists(TEXT, max_size=2), st.lists(SCALARS, max_size=2)),
    "model_api": st.one_of(st.booleans(), st.integers(0, 1), st.none(), block({"budget": BUDGET})),
    "package_path": st.one_of(st.none(), TEXT),
    "package_digest": st.one_of(st.none(), TEXT),
}
"""Values of every kind for each field: mostly refused, or left to the model."""
MOSTLY_PLAIN = st.fixed_dictionaries(
    {"name": st.sampled_from(["a", "echo", "_template:t", "a.b-c_1", "a" * 63, "a" * 64])},
    optional=LIKELY_PLAIN,
)
DEFINITIONS = st.one_of(
    st.fixed_dictionaries(
        {"name": NAMES}, optional={n: v for n, v in LIKELY.items() if n != "name"}
    ),
    st.fixed_dictionaries({}, optional={n: st.one_of(v, JSON) for n, v in LIKELY.items()}),
    st.dictionaries(st.sampled_from([*LIKELY, "unknown"]), JSON, max_size=4),
    JSON,
)


@st.composite
def rows(draw: st.DrawFn) -> FakeRow:
    """A registry row: name, version and kind columns, and the spec's JSON text (printed
    in several ways: ASCII-only or not, NaN as is, a key given twice)."""
    spec = draw(MOSTLY_PLAIN if draw(st.integers(0, 2)) else DEFINITIONS)
    raw = json.dumps(spec, ensure_ascii=draw(st.booleans()))
    if isinstance(spec, dict) and spec and draw(st.integers(0, 3)) == 0:
        key = draw(st.sampled_from(sorted(spec)))
        raw = "{" + json.dumps(key) + ": " + json.dumps(draw(JSON)) + ", " + raw[1:]
    plain = isinstance(spec, dict)
    return FakeRow(
        name=spec.get("name", "a") if plain and draw(st.booleans()) else draw(NAMES),
        version=spec.get("version", "1.0.0") if plain and draw(st.booleans()) else draw(VERSIONS),
        kind=draw(st.one_of(st.none(), st.sampled_from(["shell", "echo"]), TEXT)),
        spec=raw,
    )


@settings(max_examples=1000, deadline=None)
@given(row=rows())
def test_a_row_is_refused_or_taken_as_the_model_decides(row: FakeRow) -> None:
    """`check_agent_row` (the quick path when the definition is plain) has the outcome of
    decoding the row with the model: taken, or refused with the very same error."""
    quick = plain_agent(row["spec"])
    event("plain" if quick is not None else "left to the model")
    expected = outcome(lambda: decode_definition(AgentSpec, "agent", row))
    assert outcome(lambda: check_agent_row(row)) == expected, row.values
    if quick is not None:  # vouched for: the model accepts it, with these values
        spec = AgentSpec.model_validate_json(row["spec"])
        assert (spec.name, spec.version, spec.kind) == quick, row.values
