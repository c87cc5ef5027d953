"""What a step's model API use costs: usage read from every response, priced, summed, and
held against the step's budget.

Usage is read by the rule the built-in `claude` agent reads it by (docs/claude.md,
`agents/claude/usage.py`): a response's `usage` exactly as reported, `input_tokens`,
`output_tokens`, `cache_creation_input_tokens`, `cache_read_input_tokens` (missing counts
are 0). A value that is no count (`100.0`, `true`, `-1`, `"5"`, past 2^40) counts 0 and
flags the response (`Counted.problem`; it is `unmetered`), where the `claude` kind
refuses it. A streamed response (server-sent events) reports its usage in
`message_start` and, cumulatively, in `message_delta`; what the last event seen says is
what counts, so a stream cut short still counts what it reported. Each
response is priced by its model (`agents/claude/pricing.py`), so a step that uses two
models pays each one's price.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from swarm_engine.agents.claude.pricing import cost_usd, price_for
from swarm_engine.agents.claude.settings import Price
from swarm_engine.agents.claude.usage import COUNTS as COUNTS
from swarm_engine.agents.claude.usage import read_usage
from swarm_engine.jsonwire import top_level
from swarm_engine.models import Usage

_MODEL_AND_USAGE = frozenset({"model", "usage"})
MAX_EVENT_BYTES = 4 * 1024 * 1024
"""One server-sent event larger than this is skipped (not parsed) by the usage reader."""


@dataclass(frozen=True)
class Budget:
    max_tokens: int | None = None
    max_usd: float | None = None

    def __bool__(self) -> bool:
        return self.max_tokens is not None or self.max_usd is not None


@dataclass
class Meter:
    """The usage, cost and request counts of one step."""

    budget: Budget = field(default_factory=Budget)
    prices: tuple[Mapping[str, Price], ...] = ()
    """Override tables, lowest first (the host's, then the agent's); then the built-in."""
    usage: Usage = field(default_factory=Usage)
    requests: int = 0
    rate_limited: int = 0
    """Responses with status 429."""
    server_errors: int = 0
    """Responses with a 5xx status, and endpoint failures the gateway answered for."""
    refused: int = 0
    """Requests the gateway answered itself (budget, unknown path, no price...)."""
    unmetered: int = 0
    """Successful message responses whose usage could not be read (or not all of it)."""
    unauthorized: int = 0
    """Requests without the step's token (answered 401, never recorded one by one)."""
    busy: int = 0
    """Requests with the token refused (503) because the step already held
    `max_connections` connections that had shown it."""
    evicted: int = 0
    """Connections closed before showing the token, to make room for newer ones
    (`max_pending`)."""
    cut_off: int = 0
    """Requests the step's end cut off before their answer was through: each counts the
    usage its answer had shown (none, if it was cut off before its answer's usage came)."""

    def price(self, model: str) -> Price | None:
        return price_for(model, *self.prices)

    def response(self) -> Counted:
        """The count of one response, to update as its usage becomes known."""
        return Counted(self)

    def _add(self, delta: Usage) -> None:
        stop = self.usage.stop_reason
        self.usage = self.usage + delta
        self.usage.stop_reason = stop
        self.usage.cost_usd = round(self.usage.cost_usd, 10)

    def over_budget(self, *, above: bool = False) -> str | None:
        """Why the next request must be refused (the budget is used up), or None. With
        `above`: why the step went over its budget (used more than it), or None."""
        used, budget = self.usage, self.budget
        tokens, usd = used.total_tokens, used.cost_usd
        if budget.max_tokens is not None and (
            tokens > budget.max_tokens or (not above and tokens == budget.max_tokens)
        ):
            return f"token budget exceeded: {used.total_tokens} of {budget.max_tokens} tokens used"
        if budget.max_usd is not None and (
            usd > budget.max_usd or (not above and usd == budget.max_usd)
        ):
            return f"cost budget exceeded: ${used.cost_usd:.4f} of ${budget.max_usd:g} used"
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "rate_limited": self.rate_limited,
            "server_errors": self.server_errors,
            "refused": self.refused,
            "unmetered": self.unmetered,
            "unauthorized": self.unauthorized,
            "busy": self.busy,
            "evicted": self.evicted,
            "cut_off": self.cut_off,
        }


class Counted:
    """One response's share of its step's usage. `update` may be called as often as the
    response reports usage (a stream reports it twice or more): each call counts what is
    new since the last, so the step's total is right at every moment, before the client
    has seen the bytes that carried it. The response is one turn."""

    def __init__(self, meter: Meter) -> None:
        self._meter = meter
        self.model: str | None = None
        self.used = Usage()
        self.problem: str | None = None
        """What the last usage seen held that is no count (those count 0), or None."""

    def update(self, model: str | None, raw: Mapping[str, Any]) -> None:
        read = read_usage(raw)
        new, self.problem = read.usage, read.problem
        new.cost_usd = cost_usd(new, self._meter.price(model) if model else None)
        old = self.used
        delta = Usage(
            new.input_tokens - old.input_tokens,
            new.output_tokens - old.output_tokens,
            new.cache_creation_input_tokens - old.cache_creation_input_tokens,
            new.cache_read_input_tokens - old.cache_read_input_tokens,
            new.turns - old.turns,
            new.cost_usd - old.cost_usd,
        )
        self.model, self.used = model, new
        self._meter._add(delta)


def json_usage(body: bytes) -> tuple[str | None, dict[str, Any] | None]:
    """(model, usage) of a JSON message response; usage None when it has none. An answer
    nested past what `json.loads` reads (a tool's input 5,000 levels deep) is billed all
    the same: its top-level `model` and `usage` are read alone (`jsonwire.top_level`)."""
    try:
        data = json.loads(body)
    except RecursionError:
        data = top_level(body, _MODEL_AND_USAGE)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    model = data.get("model") if isinstance(data.get("model"), str) else None
    usage = data.get("usage")
    return model, dict(usage) if isinstance(usage, dict) else None


class EventUsage:
    """Reads usage from a stream of server-sent events as its bytes go by."""

    def __init__(self) -> None:
        self._buffer = b""
        self._skipping = False
        self.model: str | None = None
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> None:
        # normalized after joining: a chunk may end between a CR and its LF
        self._buffer = (self._buffer + chunk).replace(b"\r\n", b"\n")
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                if len(self._buffer) > MAX_EVENT_BYTES:  # an event too large to read: skip it
                    self._buffer = b""
                    self._skipping = True
                return
            event, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            if self._skipping:
                self._skipping = False
                continue
            self._event(event)

    def close(self) -> None:
        if self._buffer.strip() and not self._skipping:
            self._event(self._buffer)
        self._buffer = b""

    def _event(self, raw: bytes) -> None:
        data = b"\n".join(
            line[5:].lstrip(b" ") for line in raw.split(b"\n") if line.startswith(b"data:")
        )
        if not data:
            return
        try:
            event = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):  # (usage events are flat)
            return
        if not isinstance(event, dict):
            return
        if event.get("type") == "message_start" and isinstance(event.get("message"), dict):
            message = event["message"]
            if isinstance(message.get("model"), str):
                self.model = message["model"]
            if isinstance(message.get("usage"), dict):
                self.usage = dict(message["usage"])
        elif event.get("type") == "message_delta" and isinstance(event.get("usage"), dict):
            # cumulative counts: each one given replaces what was known
            current = self.usage if self.usage is not None else {}
            for key, value in event["usage"].items():
                if value is not None:
                    current[key] = value
            self.usage = current
