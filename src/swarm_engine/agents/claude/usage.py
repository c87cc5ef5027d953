"""How a Messages API answer's `usage` is read: one rule for the `claude` kind (which refuses
an answer whose usage breaks it as malformed) and the model API gateway (which counts what
it can and flags the answer).

A count is a JSON integer (not `true`, not `100.0`, not `"100"`) from 0 to
`MAX_COUNT`; a count that is absent or `null` is 0. `MAX_COUNT` is `records.MAX_STEP_TOKENS`
(2^40): no one answer can report more tokens of one kind than a whole step is believed to
use, and a count past it is no count (an endpoint gone wrong), never one to store (the
store's integers end at 2^63-1, and totals past 2^53 are not exact in JSON).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from swarm_engine.records import MAX_STEP_TOKENS, Usage, shown

COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
MAX_COUNT = MAX_STEP_TOKENS


def is_count(value: object) -> TypeGuard[int]:
    """True for a plausible token count: an int (not a bool), 0 <= value <= MAX_COUNT."""
    return type(value) is int and 0 <= value <= MAX_COUNT


@dataclass(frozen=True)
class ReadUsage:
    """The counts of one `usage` object (each unreadable one as 0) and what was wrong."""

    usage: Usage
    problems: tuple[str, ...] = ()

    @property
    def problem(self) -> str | None:
        """The problems in one line, or None."""
        return "; ".join(self.problems) if self.problems else None


def read_usage(raw: object, required: tuple[str, ...] = ()) -> ReadUsage:
    """Read `raw` (a response's `usage`) by the rule above. `required` counts must be
    given (not absent, not `null`). The result is one turn's usage, without a cost."""
    if not isinstance(raw, Mapping):
        return ReadUsage(Usage(turns=1), ("usage is not an object",))
    counts: dict[str, int] = {}
    problems: list[str] = []
    for key in COUNTS:
        value: Any = raw.get(key)
        if value is None:
            counts[key] = 0
            if key in required:
                problems.append(f"{key} is missing")
        elif is_count(value):
            counts[key] = value
        else:
            counts[key] = 0
            problems.append(f"{key} is {shown(value, 40)}, not a count (a whole number 0..2^40)")
    used = Usage(
        input_tokens=counts["input_tokens"],
        output_tokens=counts["output_tokens"],
        cache_creation_input_tokens=counts["cache_creation_input_tokens"],
        cache_read_input_tokens=counts["cache_read_input_tokens"],
        turns=1,
    )
    return ReadUsage(used, tuple(problems))


def count(value: object) -> int:
    """`value` if it is a count, else 0 (for counts that are only shown, never billed)."""
    return value if is_count(value) else 0
