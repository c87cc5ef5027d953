"""`${...}` templates in agent and workflow *definitions* (never in ticket inputs).

Where templates are: an agent's `command`, a workflow step's `inputs`, a workflow's
`outputs`. Everything else, above all a ticket's inputs and the values substituted into a
template, is data: never scanned for references.

Syntax: `${<path>}` is a reference (`ticket.<field>`, `inputs.<key>[.<key>...]`,
`variables.<key>`, `steps.<step-id>.outputs.<key>[...]`; a numeric key indexes a list);
`$${` is a literal `${`. Any other `${` (no closing `}`, a path with other characters) is
malformed and refused when the definition is registered. A string that is exactly one
reference takes the referenced value as is (any JSON type); otherwise references are
interpolated as text (strings as they are, other values as JSON).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from swarm_engine.errors import SwarmError
from swarm_engine.records import json_size, shown

PATH = r"[A-Za-z_][A-Za-z0-9_.\-]*"
TOKEN = re.compile(r"\$\$\{|\$\{\s*(" + PATH + r")\s*\}|\$\{")
"""One of: the escape `$${`; a reference `${path}` (group 1); a bare, malformed `${`."""
NAMESPACES = ("ticket", "inputs", "variables", "steps")
TICKET_FIELDS = ("id", "title", "description", "priority")
ESCAPE = "$${"
MAX_REFERENCE = 256
"""The most characters a reference's path may have (`steps.<id>.outputs.<key>`: a step id
is at most 64): a longer one is refused where it is written, so no line quotes it whole."""


@dataclass(frozen=True)
class Ref:
    """One `${path}` reference in a template."""

    path: str


class TemplateError(SwarmError):
    """A reference that cannot be resolved at run time."""

    exit_code = 5


def _tokens(text: str) -> Iterator[str | Ref | None]:
    """`text` as literal pieces, references, and None for each malformed `${`."""
    pos = 0
    for m in TOKEN.finditer(text):
        if m.start() > pos:
            yield text[pos : m.start()]
        pos = m.end()
        if m.group(0) == ESCAPE:
            yield "${"
        elif m.group(1) is not None:
            yield Ref(m.group(1))
        else:
            yield None
    if pos < len(text):
        yield text[pos:]


def malformed(text: str) -> str | None:
    """An error message for the first `${` in `text` that starts no reference, else None."""
    for m in TOKEN.finditer(text):
        if m.group(0) != ESCAPE and m.group(1) is None:
            snippet = text[m.start() : m.start() + 24].splitlines()[0]
            return (
                f"malformed reference {snippet!r} (a reference looks like ${{inputs.name}}; "
                "for a literal '${' write '$${')"
            )
    return None


def parse(text: str) -> list[str | Ref]:
    """`text` as literal pieces and references; `$${` becomes a literal `${`.

    A malformed `${` is kept as text: registration refuses it (`check_template`), so only a
    definition stored by an older version can hold one, and it keeps working as it did."""
    parts: list[str | Ref] = []
    for token in _tokens(text):
        if token is None:
            token = "${"
        if isinstance(token, str) and parts and isinstance(parts[-1], str):
            parts[-1] += token
        else:
            parts.append(token)
    return parts


def strings(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a nested value, with its dotted location (`inputs.list.0`)."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from strings(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list | tuple):
        for n, v in enumerate(value):
            yield from strings(v, f"{where}.{n}" if where else str(n))


def _keys(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every mapping key in a nested value, with the dotted location of its mapping."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield where or "(top)", str(k)
            yield from _keys(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list | tuple):
        for n, v in enumerate(value):
            yield from _keys(v, f"{where}.{n}" if where else str(n))


def references(value: Any) -> Iterator[str]:
    """Every well-formed reference path in a (nested) value (escapes and malformed `${`
    are skipped; `check_template` reports the latter)."""
    for _, text in strings(value):
        for token in _tokens(text):
            if isinstance(token, Ref):
                yield token.path


def check_reference(path: str, namespaces: Collection[str] = NAMESPACES) -> str | None:
    """Return an error message for a reference of the wrong shape, else None.

    `namespaces` are the ones the place of the reference can see (an agent's command sees
    only `inputs` and `ticket`)."""
    if len(path) > MAX_REFERENCE:
        return (
            f"the reference ${{{path[:60]}…}} is {len(path):,} characters long,"
            f" more than the {MAX_REFERENCE} a reference may have"
        )
    parts = path.split(".")
    if parts[0] not in namespaces:
        return (
            f"unknown namespace in ${{{path}}} (use one of {', '.join(namespaces)}; "
            "for a literal '${' write '$${')"
        )
    if len(parts) < 2 or "" in parts:
        return f"${{{path}}} needs a field, e.g. ${{{parts[0]}.name}}"
    if parts[0] == "ticket" and (len(parts) != 2 or parts[1] not in TICKET_FIELDS):
        return f"${{{path}}}: a ticket has only ${{ticket.{'|'.join(TICKET_FIELDS)}}}"
    if parts[0] == "steps" and (len(parts) < 4 or parts[2] != "outputs"):
        return f"${{{path}}} must look like ${{steps.<id>.outputs.<key>}}"
    return None


def check_template(
    value: Any, namespaces: Collection[str] = NAMESPACES, where: str = ""
) -> tuple[str, str] | None:
    """The first problem in the templates of a (nested) definition value, as
    (location, message), or None. Problems: a malformed `${`, a reference outside
    `namespaces` or of the wrong shape. What the references point to (steps, declared
    inputs) is the caller's to check. A mapping's key is never rendered, so a `${` in one
    (`$${` too) is a problem as well."""
    for location, key in _keys(value, where):
        if "${" in key:
            return location, (
                f"the key {key[:60]!r} holds '${{': a key is taken as it is, never"
                " rendered (a reference or a '$${' goes in a value)"
            )
    for location, text in strings(value, where):
        problem = malformed(text)
        if problem is None:
            problem = next(
                filter(None, (check_reference(p, namespaces) for p in references(text))), None
            )
        if problem is not None:
            return location, problem
    return None


def step_dependencies(value: Any) -> set[str]:
    return {p.split(".")[1] for p in references(value) if p.startswith("steps.")}


def _index(part: str) -> int:
    """A path part as a list index, or -1 if it is none: digits only, and never more
    than 18 (no list is that long; a definition is untrusted, and Python refuses to
    convert more than 4,300 digits)."""
    if part.isascii() and part.isdigit() and len(part) <= 18:
        return int(part)
    return -1


def _path(path: str) -> str:
    """A reference's path as a line quotes it: whole up to `MAX_REFERENCE` characters."""
    return path if len(path) <= MAX_REFERENCE else path[: MAX_REFERENCE - 1] + "…"


def lookup(path: str, context: Mapping[str, Any]) -> Any:
    """The value at reference `path` in `context`; `TemplateError` if there is none."""
    node: Any = context
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and 0 <= _index(part) < len(node):
            node = node[_index(part)]
        else:
            raise TemplateError(f"${{{_path(path)}}} does not resolve (no {shown(part, 80)})")
    return node


def render(value: Any, context: Mapping[str, Any], *, max_text: int | None = None) -> Any:
    """Substitute every reference in a definition `value` using `context` (keys: the
    namespaces). Substituted values are inserted as they are and never scanned again.

    A reference that is a whole value inserts that value itself (shared, not copied);
    references inside text build new text. `max_text`, when given, bounds the characters
    of all the text so built (each string's parts summed before it is joined; a value
    embedded as JSON measured before it is written): a definition of 1 MiB naming one
    8 MiB input in text 90,000 times is refused before any of it is made.

    Raises `TemplateError` for a reference that does not resolve, and for text over
    `max_text` (`the text its references build is more than N characters`)."""
    return _render(value, context, _Budget(max_text))


@dataclass
class _Budget:
    limit: int | None
    used: int = 0


def _render(value: Any, context: Mapping[str, Any], left: _Budget) -> Any:
    if isinstance(value, str):
        parts = parse(value)
        if len(parts) == 1 and isinstance(parts[0], Ref):
            return lookup(parts[0].path, context)
        pieces: list[Any] = []
        size = 0
        for part in parts:
            found = part if isinstance(part, str) else lookup(part.path, context)
            pieces.append(found)
            size += len(found) if isinstance(found, str) else json_size(found)
        left.used += size
        if left.limit is not None and left.used > left.limit:
            raise TemplateError(
                f"the text its references build is more than {left.limit:,} characters"
            )
        return "".join(p if isinstance(p, str) else json.dumps(p) for p in pieces)
    if isinstance(value, Mapping):
        return {k: _render(v, context, left) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_render(v, context, left) for v in value]
    return value
