"""Agent and workflow references in a path, a query or a body (`/v1/agents/{ref}`,
`/v1/workflows/{ref}`, `?agent=`, `?workflow=`, a new ticket's `agent` and `workflow`):
`NAME` or `NAME@VERSION`. One that is neither (`echo@`: no version after the `@`) is a
422 `invalid_request` naming the parameter (`query.agent: 'echo@' has no version after
'@' ...`), as any other value of the wrong shape; it was `invalid_definition`, the code
of a definition the registry refuses, which a reference is not.

Use: `Annotated[str, REFERENCE, Query(max_length=...)]`."""

from __future__ import annotations

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from swarm_engine.errors import ConfigError
from swarm_engine.records import split_ref


def reference(value: object) -> object:
    """`value` as it came when it is `NAME` or `NAME@VERSION` (or not text: a default);
    else a 422 (`reference`) saying why, in `split_ref`'s words."""
    if isinstance(value, str):
        try:
            split_ref(value)
        except ConfigError as exc:
            raise PydanticCustomError("reference", "{why}", {"why": str(exc)}) from None
    return value


REFERENCE = AfterValidator(reference)
"""The check, as an `Annotated` marker."""
