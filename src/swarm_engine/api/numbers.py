"""Whole numbers in a path or a query (`/v1/tickets/{ticket_id}`, `?limit=`, `?cursor=`,
`?after=`): ASCII digits with an optional `-` (`-?[0-9]+`), as the CLI reads an id or a
number option (`cli/app.py` `Id`, `Whole`). pydantic's lax `int` also takes `' 1'`,
`'1 '`, `'+1'`, `'1_0'` and `'1.0'` (as Python's `int()` does most of them); those are
422s naming the parameter, never another ticket than the digits say.

Use: `Annotated[int, ASCII_WHOLE, Path(ge=..., le=...)]` (the range stays the `Path`'s or
`Query`'s). JSON bodies need nothing of this: their models are strict (`api/models.py`),
a number there is a JSON number."""

from __future__ import annotations

import re

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from swarm_engine.records import shown

WHOLE_TEXT = re.compile(r"-?[0-9]+", re.ASCII)


def ascii_whole(value: object) -> object:
    """`value` as it came when it is text written `-?[0-9]+` (or not text: a default);
    else a 422 (`int_parsing`, as pydantic's own) saying what a whole number is here."""
    if isinstance(value, str) and WHOLE_TEXT.fullmatch(value) is None:
        raise PydanticCustomError(
            "int_parsing",
            "{value} is not a whole number in ASCII digits (-?[0-9]+)",
            {"value": shown(value, 40)},
        )
    return value


ASCII_WHOLE = BeforeValidator(ascii_whole)
"""The check, as an `Annotated` marker."""
