"""Per-model prices and the cost of a step's usage.

Prices are USD per million tokens, from Anthropic's public pricing page (checked 2026-11).
Cache writes are priced at the 5-minute rate. Override or extend the table with `prices`
in the agent's config or in the host's `[agents.claude]` settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from swarm_engine.agents.claude.settings import Price
from swarm_engine.models import Usage

CACHE_WRITE_FACTOR = 1.25
CACHE_READ_FACTOR = 0.1


def _p(inp: float, out: float, write: float, read: float) -> Price:
    return Price(input=inp, output=out, cache_write=write, cache_read=read)


PRICES: dict[str, Price] = {
    "claude-fable-5-1": _p(10, 50, 12.5, 0.25),
    "claude-mythos-5-1": _p(10, 50, 12.5, 0.25),
    "claude-fable-5": _p(10, 50, 12.5, 1.0),
    "claude-mythos-5": _p(10, 50, 12.5, 1.0),
    "claude-opus-5": _p(5, 25, 6.25, 0.5),
    "claude-opus-4-8": _p(5, 25, 6.25, 0.5),
    "claude-opus-4-7": _p(5, 25, 6.25, 0.5),
    "claude-opus-4-6": _p(5, 25, 6.25, 0.5),
    "claude-opus-4-5": _p(5, 25, 6.25, 0.5),
    "claude-opus-4-1": _p(15, 75, 18.75, 1.5),
    "claude-opus-4": _p(15, 75, 18.75, 1.5),
    "claude-sonnet-4-6": _p(3, 15, 3.75, 0.3),
    "claude-sonnet-4-5": _p(3, 15, 3.75, 0.3),
    "claude-sonnet-4": _p(3, 15, 3.75, 0.3),
    "claude-haiku-4-5": _p(1, 5, 1.25, 0.1),
    "claude-3-5-haiku": _p(0.8, 4, 1.0, 0.08),
    "claude-3-haiku": _p(0.25, 1.25, 0.3, 0.03),
}

_ALIASES = {"claude-opus-4-0": "claude-opus-4", "claude-sonnet-4-0": "claude-sonnet-4"}
_DATE_SUFFIX = re.compile(r"-(\d{8}|latest)$")


def price_for(model: str, *overrides: Mapping[str, Price]) -> Price | None:
    """The price of `model`: later override tables win; dated ids ('...-20251001') and
    '-latest' fall back to their undated id. None when the model is unknown."""
    base = _DATE_SUFFIX.sub("", model)
    base = _ALIASES.get(base, base)
    for table in (*reversed(overrides), PRICES):
        for name in (model, base):
            if name in table:
                return table[name]
    return None


def cost_usd(usage: Usage, price: Price | None) -> float:
    """Cost of `usage` at `price` (0.0 when the price is unknown)."""
    if price is None:
        return 0.0
    write = price.cache_write if price.cache_write is not None else price.input * CACHE_WRITE_FACTOR
    read = price.cache_read if price.cache_read is not None else price.input * CACHE_READ_FACTOR
    total = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_creation_input_tokens * write
        + usage.cache_read_input_tokens * read
    )
    return round(total / 1_000_000, 10)
