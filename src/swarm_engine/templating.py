"""`${...}` references in workflow inputs.

Namespaces: `ticket.<field>`, `inputs.<key>[.<key>...]`, `variables.<key>`,
`steps.<step-id>.outputs.<key>[...]`. A string that is exactly one reference takes the
referenced value as is (any JSON type); otherwise references are interpolated as text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from swarm_engine.errors import SwarmError

REF = re.compile(r"\$\{\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*\}")
NAMESPACES = ("ticket", "inputs", "variables", "steps")


class TemplateError(SwarmError):
    """A reference that cannot be resolved at run time."""

    exit_code = 5


def references(value: Any) -> Iterator[str]:
    """Every reference path in a (nested) value."""
    if isinstance(value, str):
        for m in REF.finditer(value):
            yield m.group(1)
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from references(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from references(v)


def check_reference(path: str) -> str | None:
    """Return an error message for a malformed reference, else None."""
    parts = path.split(".")
    if parts[0] not in NAMESPACES:
        return f"unknown namespace in ${{{path}}} (use one of {', '.join(NAMESPACES)})"
    if len(parts) < 2:
        return f"${{{path}}} needs a field, e.g. ${{{parts[0]}.name}}"
    if parts[0] == "steps" and (len(parts) < 4 or parts[2] != "outputs"):
        return f"${{{path}}} must look like ${{steps.<id>.outputs.<key>}}"
    return None


def step_dependencies(value: Any) -> set[str]:
    return {p.split(".")[1] for p in references(value) if p.startswith("steps.")}


def _lookup(path: str, context: Mapping[str, Any]) -> Any:
    node: Any = context
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise TemplateError(f"${{{path}}} does not resolve (no {part!r})")
    return node


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Substitute every reference in `value` using `context` (keys: the namespaces)."""
    if isinstance(value, str):
        whole = REF.fullmatch(value.strip())
        if whole and value.strip() == value:
            return _lookup(whole.group(1), context)

        def text(m: re.Match[str]) -> str:
            found = _lookup(m.group(1), context)
            return found if isinstance(found, str) else json.dumps(found)

        return REF.sub(text, value)
    if isinstance(value, Mapping):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render(v, context) for v in value]
    return value
