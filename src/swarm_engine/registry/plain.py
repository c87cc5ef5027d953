"""A quick check of plain agent definitions, without pydantic.

`ticket create` checks the agent's stored definition (a registry row any SQLite client may
have written) before it makes the ticket. Building `AgentSpec` for that imports pydantic
and models.py, about 80 ms of the command (docs/benchmarks.md, "CLI start-up"). Most
definitions are plain: what `agent register` stored, or the built-in ones.
`plain_agent` accepts only a definition that `AgentSpec` surely accepts (JSON the model's
parser reads alike, known fields, values of the plain types within the model's bounds)
and gives its name, version and kind as the model would. It says None for anything else,
valid or not: the model decides, and makes the spec or the same one-line error as before.

`tests/unit/test_agent_plain.py` holds this copy to models.py: its fields, defaults and
bounds are the models', the models' ints, bools and floats are strict (a float field takes
a number, never text such as `'30'`) and their unbounded floats finite as here, and a
Hypothesis test checks that whatever it accepts, the model accepts with the same name,
version and kind.
"""

from __future__ import annotations

import json
import math
from typing import Any

from swarm_engine.errors import VMError
from swarm_engine.records import (
    ENV_MAX_VARS,
    ENV_NAME_RE,
    IMAGE_RE,
    NAME_RE,
    QEMU_MIN_MEMORY_MB,
    VERSION_RE,
)
from swarm_engine.vm.base import output_file_path

# Each model's fields and the rule its value must meet: a type (`str`, `int` and `bool`
# exactly, as the models' strict fields take them; `float`, a finite number, as the strict
# float fields take it: an int or a float, never a bool or text), a pattern
# (`name`, `version`, `image`), `json` (any JSON object), `env` (at most `ENV_MAX_VARS`
# names as `ENV_NAME_RE`, text values without NUL), `files` (a list of text, each an
# output file's path as `vm.base.output_file_path` takes it), `command` (text that is not
# blank, or a list of text whose first item is not), `ports`, a model of this table, or
# `model_api` (a bool or a ModelApiSpec); `?`: or null.
MODELS: dict[str, dict[str, str]] = {
    "AgentSpec": {
        "name": "name",
        "version": "version",
        "description": "str",
        "kind": "str",
        "command": "command?",
        "entry": "str?",
        "inputs": "json",
        "outputs": "json",
        "memory_mb": "int",
        "vcpus": "int",
        "timeout_seconds": "float",
        "env": "env",
        "vm": "VMRequirements",
        "retry": "RetryPolicy",
        "config": "json",
        "output_files": "files",
        "model_api": "model_api",
        "package_path": "str?",
        "package_digest": "str?",
    },
    "VMRequirements": {
        "backend": "str?",
        "memory_mb": "int?",
        "vcpus": "int?",
        "network": "bool",
        "allowed_ports": "ports",
        "image": "image?",
    },
    "RetryPolicy": {
        "attempts": "int",
        "backoff_seconds": "float",
        "backoff_factor": "float",
        "max_backoff_seconds": "float",
    },
    "ModelApiSpec": {"budget": "ApiBudget"},
    "ApiBudget": {"max_tokens": "int?", "max_usd": "float?"},
}
BOUNDS: dict[str, dict[str, int]] = {
    "AgentSpec.memory_mb": {"ge": 16, "le": 65536},
    "AgentSpec.vcpus": {"ge": 1, "le": 64},
    "AgentSpec.timeout_seconds": {"gt": 0, "le": 7 * 24 * 3600},
    "VMRequirements.memory_mb": {"ge": 16, "le": 65536},
    "VMRequirements.vcpus": {"ge": 1, "le": 64},
    "VMRequirements.allowed_ports": {"ge": 1, "le": 65535},
    "RetryPolicy.attempts": {"ge": 1, "le": 20},
    "RetryPolicy.backoff_seconds": {"ge": 0, "le": 3600},
    "RetryPolicy.backoff_factor": {"ge": 1, "le": 10},
    "RetryPolicy.max_backoff_seconds": {"ge": 0, "le": 7 * 24 * 3600},
    "ApiBudget.max_tokens": {"gt": 0, "le": 2**40},
    "ApiBudget.max_usd": {"gt": 0, "le": 10**6},
}
"""The models' bounds on numbers (`allowed_ports`: on each port); a test checks them."""
DEFAULTS = {"version": "1.0.0", "kind": "shell"}
"""AgentSpec's defaults for the two fields `plain_agent` returns besides the name."""
MAX_DEPTH = 32
"""Nesting taken in a free-form value (`inputs`, `config`, ...): the model's JSON parser
refuses about 200 levels."""
LEAST_INT, MOST_INT = -(2**63), 2**64 - 1
"""Integers taken in a free-form value or as a float (the parser's are bounded too)."""


def plain_agent(raw: str) -> tuple[str, str, str] | None:
    """`(name, version, kind)` of the agent definition `raw` (JSON text, as stored) when
    `AgentSpec` surely accepts it; None when the model must decide."""
    try:
        data = json.loads(raw, object_pairs_hook=_once, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # bad JSON, a key twice, NaN, too deep
        return None
    if not (type(data) is dict and "name" in data and _model(data, "AgentSpec")):
        return None
    vm = data.get("vm") or {}
    memory = vm.get("memory_mb") or data.get("memory_mb")  # (the default, 512, is enough)
    if vm.get("backend") == "qemu" and memory is not None and memory < QEMU_MIN_MEMORY_MB:
        return None  # AgentSpec refuses it (too small for a qemu VM): the model says so
    return (
        data["name"],
        data.get("version", DEFAULTS["version"]),
        data.get("kind", DEFAULTS["kind"]),
    )


def _once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key twice")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not plain JSON")


def _model(value: Any, model: str) -> bool:
    fields = MODELS[model]
    return (
        type(value) is dict
        and value.keys() <= fields.keys()
        and all(_fits(item, fields[key], f"{model}.{key}") for key, item in value.items())
    )


def _fits(value: Any, rule: str, field: str) -> bool:
    if rule.endswith("?"):
        if value is None:
            return True
        rule = rule[:-1]
    if rule in MODELS:
        return _model(value, rule)
    if rule in ("str", "name", "version", "image"):
        pattern = {"name": NAME_RE, "version": VERSION_RE, "image": IMAGE_RE}.get(rule)
        return _text(value) and (pattern is None or pattern.fullmatch(value) is not None)
    if rule == "int":
        return type(value) is int and _within(value, BOUNDS[field])
    if rule == "float":
        return _number(value) and _within(value, BOUNDS[field])
    if rule == "bool":
        return type(value) is bool
    if rule == "model_api":
        return type(value) is bool or _model(value, "ModelApiSpec")
    if rule == "json":
        return type(value) is dict and _json(value, 0)
    if rule == "env":
        return (
            type(value) is dict
            and len(value) <= ENV_MAX_VARS
            and all(
                _text(k) and ENV_NAME_RE.fullmatch(k) is not None and _text(v) and "\x00" not in v
                for k, v in value.items()
            )
        )
    if rule == "command" and _text(value):
        return bool(value.strip()) and "\x00" not in value
    if rule == "command":  # a program first, no NUL: AgentSpec._command
        return (
            type(value) is list
            and all(_text(item) and "\x00" not in item for item in value)
            and bool(value)
            and bool(value[0].strip())
        )
    if rule == "files":
        return type(value) is list and all(_text(item) and _file(item) for item in value)
    if rule == "ports":
        bounds = BOUNDS[field]
        return (
            type(value) is list
            and all(type(port) is int and _within(port, bounds) for port in value)
            and len(set(value)) == len(value)
        )
    raise AssertionError(f"no rule {rule!r}")  # pragma: no cover (the table is fixed)


def _file(path: str) -> bool:
    try:
        output_file_path(path)
    except VMError:
        return False
    return True


def _within(number: float, bounds: dict[str, int]) -> bool:
    return (
        ("ge" not in bounds or number >= bounds["ge"])
        and ("gt" not in bounds or number > bounds["gt"])
        and ("le" not in bounds or number <= bounds["le"])
    )


def _text(value: Any) -> bool:
    """Text the model's JSON parser reads alike: no lone surrogate (`"\\ud800"`)."""
    if type(value) is not str:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _number(value: Any) -> bool:
    """A JSON number as the parser reads it too: finite, integers bounded (no bool)."""
    if type(value) is int:
        return LEAST_INT <= value <= MOST_INT
    return type(value) is float and math.isfinite(value)


def _json(value: Any, depth: int) -> bool:
    """A free-form JSON value of plain text and numbers, nested at most MAX_DEPTH deep."""
    if value is None or type(value) is bool:
        return True
    if type(value) is str:
        return _text(value)
    if type(value) in (int, float):
        return _number(value)
    if depth >= MAX_DEPTH:
        return False
    if type(value) is list:
        return all(_json(item, depth + 1) for item in value)
    return type(value) is dict and all(
        _text(key) and _json(item, depth + 1) for key, item in value.items()
    )
