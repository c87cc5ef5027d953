"""Plain records and value rules shared by every layer, without pydantic: ticket statuses,
API usage, `name@version` references, strict JSON, the patterns of definition names.

The store and the short commands (`status`, `ticket create`, `ticket cancel`) need these
and nothing of `models.py`'s validated definitions, whose pydantic import is a third of a
short command's start-up (docs/benchmarks.md, "CLI start-up"). `models.py` re-exports them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

NAME_RE = re.compile(r"^(_template:)?[a-z0-9][a-z0-9_.-]{0,62}$")
"""An agent's, workflow's or trigger's name (only agents may be `_template:`s)."""
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
"""A VM image's name in the host's images folder (never a path)."""
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+-]{0,31}$")
"""A definition's version."""


class TicketStatus(StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    CLAIMED = "claimed"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({TicketStatus.DONE, TicketStatus.FAILED, TicketStatus.CANCELLED})


@dataclass
class Usage:
    """API usage of one step (or a run, summed). Zero for agents without an API."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    turns: int = 0
    cost_usd: float = 0.0
    stop_reason: str | None = None

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.turns + other.turns,
            self.cost_usd + other.cost_usd,
            other.stop_reason or self.stop_reason,
        )

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
        )


def split_ref(ref: str) -> tuple[str, str | None]:
    """'name@1.2' -> ('name', '1.2'); 'name' -> ('name', None)."""
    name, sep, version = ref.partition("@")
    return name, (version if sep else None)


def _finite(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str | bytes) -> Any:
    """`json.loads` as the store's `json_valid` and other JSON readers see it: no NaN or
    Infinity, no number that overflows to infinity (`1e999`). Raises ValueError."""
    return json.loads(text, parse_float=_finite, parse_constant=_no_constant)
