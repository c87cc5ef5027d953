"""JSON Schemas of agent definitions (`inputs`, `outputs`): checked and compiled here, and
only here, so that registration and the engine agree.

A schema is a registry row, so it is untrusted input. A `$ref` (or `$dynamicRef`,
`$recursiveRef`) is resolved only within the schema itself, and against the JSON Schema
meta-schemas jsonschema carries with it: the `referencing.Registry` every validator is
given (`registry=`) refuses to retrieve anything, so a reference is never fetched from a
URL nor read from a file, at registration or at run time. Registration refuses a schema
with a reference that does not resolve so; a row holding one fails its own ticket.

jsonschema and referencing are imported lazily: they cost every command's start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import referencing
    from jsonschema.protocols import Validator

REFERENCE_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
LOCAL_ONLY = "only references within the schema resolve; nothing is fetched"


def _refuse(uri: str) -> Any:
    """The `retrieve` of `local_registry()`: no resource is ever fetched or read."""
    from referencing.exceptions import NoSuchResource

    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


def local_registry() -> referencing.Registry[Any]:
    """A registry that knows the meta-schemas and retrieves nothing else."""
    import referencing
    from jsonschema_specifications import REGISTRY  # type: ignore[import-untyped]

    refuse: referencing.Registry[Any] = referencing.Registry(retrieve=_refuse)  # type: ignore[call-arg]
    combined: referencing.Registry[Any] = REGISTRY.combine(refuse)
    return combined


def unresolvable_ref(schema: Any) -> tuple[list[str | int], str] | None:
    """The first reference of `schema` that does not resolve within it (or the
    meta-schemas): where it is (the keys down to the subschema holding it) and what it
    is (`"$ref 'http://...'"`); None when every one resolves. Walks the schema without
    recursion, however deep it nests."""
    import jsonschema
    import referencing.jsonschema
    from referencing.exceptions import Unresolvable

    cls = jsonschema.validators.validator_for(schema)
    specification = referencing.jsonschema.specification_with(
        cls.META_SCHEMA["$schema"], default=referencing.jsonschema.DRAFT202012
    )
    root = specification.create_resource(schema)
    todo = [(root, local_registry().resolver_with_root(root))]
    while todo:
        resource, resolver = todo.pop()
        contents = resource.contents
        if isinstance(contents, dict):
            for keyword in REFERENCE_KEYWORDS:
                ref = contents.get(keyword)
                if not isinstance(ref, str):
                    continue
                try:
                    resolver.lookup(ref)
                except (Unresolvable, ValueError):  # ValueError: not a URI (`http://[`)
                    return _where(schema, contents), f"{keyword} {ref[:200]!r}"
        try:
            subresources = list(resource.subresources())
        except (AttributeError, TypeError, ValueError):
            # a malformed keyword (`properties: 5`): the meta-schema check refuses it at
            # registration; a row's is met by validation, and retrieves nothing either way
            continue
        todo += [(sub, resolver.in_subresource(sub)) for sub in subresources]
    return None


def _where(schema: Any, part: object) -> list[str | int]:
    """The keys from `schema` down to the object `part` ([] if it is not found)."""
    todo: list[tuple[Any, list[str | int]]] = [(schema, [])]
    while todo:
        node, path = todo.pop()
        if node is part:
            return path
        if isinstance(node, dict):
            todo += [(v, [*path, k]) for k, v in node.items() if isinstance(v, dict | list)]
        elif isinstance(node, list):
            todo += [(v, [*path, i]) for i, v in enumerate(node) if isinstance(v, dict | list)]
    return []


def schema_problem(field: str, exc: Any) -> str:
    """`inputs.properties.x: not a valid JSON Schema: ...`: one line for a
    `jsonschema.SchemaError` raised checking the schema held in `field`."""
    where = ".".join(str(p) for p in exc.absolute_path)
    return f"{field}{'.' + where if where else ''}: not a valid JSON Schema: {exc.message}"


def check_schema(schema: Any) -> None:
    """Raise `jsonschema.SchemaError` if `schema` is not a valid JSON Schema of its
    dialect, or holds a reference that does not resolve within it."""
    import jsonschema

    jsonschema.validators.validator_for(schema).check_schema(schema)
    found = unresolvable_ref(schema)
    if found is not None:
        where, ref = found
        raise jsonschema.SchemaError(f"{ref} does not resolve ({LOCAL_ONLY})", path=where)


def validator(schema: Any) -> Validator:
    """A validator for `schema` whose references resolve only within it. Raises
    `jsonschema.SchemaError` if `schema` is not a valid JSON Schema of its dialect (the
    validator's own `check_schema`), `ConfigError` (one line) for a reference that does
    not resolve; validating may still raise
    `referencing.exceptions.Unresolvable` for a dynamic reference (see `validate`)."""
    import jsonschema

    from swarm_engine.errors import ConfigError

    found = unresolvable_ref(schema)
    if found is not None:
        where, ref = found
        at = "".join(f"[{p!r}]" for p in where)
        raise ConfigError(f"{ref}{' at ' + at if at else ''} does not resolve ({LOCAL_ONLY})")
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=local_registry())
