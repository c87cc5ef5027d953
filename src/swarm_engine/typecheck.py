"""Strict types for settings from typed sources: config.toml and JSON in `SWARM_*` variables.

A TOML or JSON value already has a type, so a setting takes it only as the type it is
declared with: `true` is not the number 1 (a bool is an int in Python), `"64"` is not 64,
`64.0` is not the integer 64, and `nan`/`inf` are no number of seconds. pydantic's lax mode
would take each of them; these checks run first and refuse them with one line naming the
key, its value and the type it needs. Plain environment values (`SWARM_MAX_VMS=8`) are
text by nature and are read as before.

`type_problem` walks a model's annotations (it never imports pydantic: a model is anything
with `model_fields`), so every field of every section, and of every backend's options, is
held to its declared type without a list to keep in step. Values are left to the models.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import PurePath
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from swarm_engine.records import shown

_SCALARS: dict[type, str] = {bool: "true or false", int: "an integer", float: "a number"}


def kind(value: Any) -> str:
    """What a TOML or JSON value is, as a line names it."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float" if math.isfinite(value) else "not a finite number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, datetime | date | time):
        return "a date or time"
    if value is None:
        return "null"
    return type(value).__name__


def value_shown(value: Any) -> str:
    """A value as written in TOML, bounded: `true`, `"64"`, `nan`, `64.0`; a table or a
    list by its kind alone."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return shown(value, 60)
    return kind(value)


def problem_line(where: str, value: Any, expected: str) -> str:
    """`where: "64" is text, expected an integer`; a table or list is said once (`is a
    list`), not by its kind twice."""
    if isinstance(value, Mapping | list | tuple):
        return f"{where}: {kind(value)} given, expected {expected}"
    return f"{where}: {value_shown(value)} is {kind(value)}, expected {expected}"


def scalar_problem(tp: type, value: Any, where: str) -> str | None:
    """Why `value` is not strictly a `tp` (`int`, `float`, `bool` or `str`), or None. A
    float setting takes an integer too (`lease_ttl = 30`); never NaN or an infinity."""
    if tp is bool:
        ok = type(value) is bool
    elif tp is int:
        ok = type(value) is int
    elif tp is float:
        ok = type(value) is int or (type(value) is float and math.isfinite(value))
    else:
        ok = isinstance(value, str)
    return None if ok else problem_line(where, value, _SCALARS.get(tp, "text"))


@dataclass(frozen=True)
class _Field:
    annotation: Any


def table(fields: Mapping[str, Any]) -> type:
    """A table's keys and their types as `type_problem` reads a model's (`model_fields`),
    without importing one: `table({"install": bool, "npm": str})`. A class, so that it
    goes in annotations (`table(...) | None`, `dict[str, table(...)]`)."""
    return type("Table", (), {"model_fields": {n: _Field(tp) for n, tp in fields.items()}})


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_fields")


def _expected(tp: Any) -> str:
    """A type as a line names it."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _expected(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_expected(a) for a in args if a is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(value_shown(a) for a in args)
    if tp in _SCALARS:
        return _SCALARS[tp]
    if tp is str or (isinstance(tp, type) and issubclass(tp, PurePath)):
        return "text"
    if _is_model(tp) or origin in (dict, Mapping):
        return "a table"
    if origin in (list, tuple, set, frozenset):
        return "a list"
    return "a value"


def _accepts(tp: Any, value: Any) -> bool:
    """Whether `value` is of `tp`'s kind at the top (its parts are looked at apart)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _accepts(args[0], value)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_accepts(a, value) for a in args)
    if tp is type(None):
        return value is None
    if origin is Literal:
        return any(type(value) is type(a) for a in args)
    if tp in _SCALARS:
        return scalar_problem(tp, value, "") is None
    if tp is str:
        return isinstance(value, str)
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return isinstance(value, str | PurePath)
    if _is_model(tp) or origin in (dict, Mapping):
        return isinstance(value, Mapping)
    if origin in (list, tuple, set, frozenset):
        return isinstance(value, list | tuple)
    return True  # a type these checks do not know: the model decides


def type_problem(tp: Any, value: Any, where: str) -> str | None:
    """Why `value` (from TOML or JSON) is not strictly of the declared type `tp`, naming
    where it is (`setting backend_options.process.disk_mb`), or None. Keys a model does
    not know and values a type allows are left to the model."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return type_problem(args[0], value, where)
    if origin in (Union, types.UnionType):
        arms = [a for a in args if _accepts(a, value)]
        if not arms:
            return problem_line(where, value, _expected(tp))
        models = [a for a in arms if _is_model(a)]
        if len(models) > 1:  # a tagged union: the arm whose tags the table matches
            arms = [m for m in models if _tags_match(m, value)] or [models[0]]
        return type_problem(arms[0], value, where)
    if not _accepts(tp, value):
        if tp in _SCALARS:
            return scalar_problem(tp, value, where)
        return problem_line(where, value, _expected(tp))
    if _is_model(tp):
        for name, field in tp.model_fields.items():
            if name in value:
                problem = type_problem(field.annotation, value[name], f"{where}.{name}")
                if problem:
                    return problem
    elif origin in (dict, Mapping) and len(args) == 2:
        for key, item in value.items():
            problem = type_problem(args[1], item, f"{where}.{key}")
            if problem:
                return problem
    elif origin in (list, set, frozenset) or (origin is tuple and args[-1:] == (Ellipsis,)):
        for i, item in enumerate(value):
            problem = type_problem(args[0], item, f"{where}[{i}]") if args else None
            if problem:
                return problem
    elif origin is tuple and len(args) == len(value):
        for i, (arg, item) in enumerate(zip(args, value, strict=True)):
            problem = type_problem(arg, item, f"{where}[{i}]")
            if problem:
                return problem
    return None


def _tags_match(model: Any, value: Mapping[str, Any]) -> bool:
    """Whether each tag of `model` (a field that is a `Literal` of one value, such as
    `backend: Literal["qemu"]`) that `value` holds has that value."""
    for name, field in model.model_fields.items():
        tag = get_args(field.annotation)
        is_tag = get_origin(field.annotation) is Literal and len(tag) == 1
        if is_tag and name in value and value[name] != tag[0]:
            return False
    return True
