"""What `/metrics` reports, read so that it stays cheap however large the history grows.

- Ticket counts per status: one `GROUP BY status` that the `tickets_status_id` index
  answers alone on SQLite (an index-only scan; PostgreSQL takes it or a parallel scan);
  it still reads an entry per ticket, so it is cached for `COUNTS_TTL` seconds: many
  scrapers cost one count.
- VM slots per host: live VMs only, through the `vms_live` and `engines_live` indexes.
- Totals over history (dispatch latency and step duration histograms, lease reclaims,
  tokens and cost): `Tally` reads each history table once, in primary-key order, and
  afterwards only the rows added since (`ticket_events` and `step_executions` only grow).
  The first read of a large history takes a while (about 2 s per 100,000 finished
  tickets on 2 cores, once per server process), spread over scrapes `CATCH_UP_SECONDS`
  at a time so that none times out; every later one reads the new rows alone.

A row is counted once it is settled: a step once it ended, anything once it is
`SETTLE_SECONDS` old (on PostgreSQL a row with a lower id can become visible after one
with a higher id, while its transaction commits). A step still queued or running when
the walk reaches it does not hold the walk up: its id is kept (`Tally.pending`, at most
`MAX_PENDING`) and read again at each refresh until it ends, so the steps after it are
counted meanwhile, and each step once. On PostgreSQL the walk also stops at
the id the table's sequence last handed out, and below 2^62 - 2^32 (the store's
`events_after`/`steps_after` bound it; 0 when it never handed one out): a row another client wrote with an id of its
own ahead of the sequence (say 900002 while the engine's ids are at 50) would otherwise
move the mark past every id the sequence hands out until it gets there, and those rows
would never be counted. Such a row is counted once the sequence passes it: a running
engine's next heartbeat raises a sequence behind a row to it, as does an insert that
meets such a row's id (`store/pgsequences.py`). On SQLite no bound is needed: a
new rowid is above the largest. A row a client writes with its own id at or below the
mark (a gap the ids skipped) is counted by a server started after it, not by one whose
walk already passed it: rereading passed ids would cost every scrape the whole history.
Rows are untrusted: a value that cannot
be read is left out, never an error; so is an implausible one (records.py: a step's tokens
of a kind over 2**40, its cost over 1e6 USD, its duration over 366 days, or any of them
negative: the store reads it as NULL, `steps_after`, and it is checked here again), so
that one row spoils no total; each step with such a value is counted in `Tally.left_out`
(the store says how many of its usage values a row holds, `usage_values`). Token totals
stop at 2**53-1 (`MAX_TOTAL_TOKENS`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from swarm_engine.records import (
    MAX_STEP_COST_USD,
    MAX_STEP_DURATION_MS,
    MAX_STEP_TOKENS,
    MAX_TOTAL_TOKENS,
)
from swarm_engine.store.tickets import BEFORE_ALL
from swarm_engine.store.timestamps import parse_timestamp

if TYPE_CHECKING:
    from swarm_engine.registry import Registry
    from swarm_engine.store import Store

COUNTS_TTL = 5.0
SETTLE_SECONDS = 10.0
STUCK_SECONDS = 8 * 86400.0
"""A step unfinished this long (past any timeout) is not waited for any more."""
MAX_PENDING = 10_000
"""Unfinished steps the walk has passed and looks at again (`Tally.pending`); past this
many, it waits at the next unfinished one, as it did for each before. Reading all of
them again takes about 70 ms (SQLite, 2 shared cores)."""
CHUNK = 5000
CATCH_UP_SECONDS = 2.0
"""A refresh stops reading history after about this long (a scrape must not time out);
the next one goes on where it stopped."""
DISPATCH_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                    900.0, 3600.0, math.inf)  # fmt: skip
STEP_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
                math.inf)  # fmt: skip
TOKEN_KINDS = ("input", "output", "cache_creation_input", "cache_read_input")
LIVE = ("open", "claimed", "running")


@dataclass
class Histogram:
    """Cumulative counts per upper bound (`le`), as Prometheus keeps them."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return self.counts[-1]


@dataclass
class Tally:
    """Totals over the store's history, brought up to date by `refresh` (thread-safe)."""

    dispatch: Histogram = field(default_factory=lambda: Histogram(DISPATCH_BUCKETS))
    steps: Histogram = field(default_factory=lambda: Histogram(STEP_BUCKETS))
    reclaims: int = 0
    left_out: int = 0
    """Finished steps with a usage value (duration, tokens, cost) that was left out:
    implausible or unreadable."""
    tokens: dict[tuple[str, str], int] = field(default_factory=dict)
    """(model, kind) -> tokens; kind is one of `TOKEN_KINDS`."""
    cost: dict[str, float] = field(default_factory=dict)
    """model -> USD."""
    event_mark: int = BEFORE_ALL
    step_mark: int = BEFORE_ALL
    """The last `ticket_events` and `step_executions` ids counted (ids of 0 and below
    are any client's, and counted too)."""
    pending: set[int] = field(default_factory=set)
    """Ids of steps below `step_mark` that were unfinished when the walk passed them
    (at most `MAX_PENDING`): read again at each refresh, counted once they end, dropped
    when gone or unfinished for `STUCK_SECONDS`."""
    models: dict[tuple[str, str], str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self, store: Store, model_of: Callable[[str, str, str], str]) -> None:
        """Read what was added since the last refresh. `model_of(name, version, kind)`
        names the model an agent calls (`model_for` with a registry)."""
        with self.lock:
            now = datetime.now(UTC)
            share = CATCH_UP_SECONDS / 2  # each table gets half
            self._events(store, now, time.monotonic() + share)
            self._steps(store, now, model_of, time.monotonic() + share)

    def _events(self, store: Store, now: datetime, deadline: float) -> None:
        while time.monotonic() < deadline:
            rows = store.tickets.events_after(self.event_mark, CHUNK)
            for row in rows:
                at = _time(row.get("at"))
                if at is not None and (now - at).total_seconds() < SETTLE_SECONDS:
                    return
                self.event_mark = int(row["id"])
                old, new = row.get("old_status"), row.get("new_status")
                if old == "open" and new == "claimed":
                    opened = _time(row.get("opened_at"))
                    if at is not None and opened is not None and at >= opened:
                        self.dispatch.observe((at - opened).total_seconds())
                elif old in ("claimed", "running") and _is_reclaim(row):
                    self.reclaims += 1
            if len(rows) < CHUNK:
                return

    def _steps(
        self,
        store: Store,
        now: datetime,
        model_of: Callable[[str, str, str], str],
        deadline: float,
    ) -> None:
        self._pending_steps(store, now, model_of)
        while time.monotonic() < deadline:
            rows = store.runs.steps_after(self.step_mark, CHUNK)
            for row in rows:
                age = _age(row, now)
                if age < SETTLE_SECONDS:
                    return
                step_id = int(row["id"])
                if _unfinished(row) and age < STUCK_SECONDS:
                    if len(self.pending) >= MAX_PENDING:
                        return  # waits here until one of them ends
                    self.pending.add(step_id)
                elif not _unfinished(row):
                    self._count_step(row, model_of)
                self.step_mark = step_id
            if len(rows) < CHUNK:
                return

    def _pending_steps(
        self, store: Store, now: datetime, model_of: Callable[[str, str, str], str]
    ) -> None:
        """Count the passed steps that have ended since; drop those gone or stuck."""
        ids = sorted(self.pending)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            rows = {int(r["id"]): r for r in store.runs.steps_with_ids(chunk)}
            for step_id in chunk:
                row = rows.get(step_id)
                if row is not None and _unfinished(row):
                    if _age(row, now) < STUCK_SECONDS:
                        continue
                elif row is not None:
                    self._count_step(row, model_of)
                self.pending.discard(step_id)

    def _count_step(self, row: dict[str, Any], model_of: Callable[[str, str, str], str]) -> None:
        duration = _number(row.get("duration_ms"))
        usable = 0
        if duration is not None and 0 <= duration <= MAX_STEP_DURATION_MS:
            self.steps.observe(duration / 1000.0)
            usable += 1
        used = {kind: _count(row.get(f"{kind}_tokens")) for kind in TOKEN_KINDS}
        usable += sum(_is_count(row.get(f"{kind}_tokens")) for kind in TOKEN_KINDS)
        cost = _number(row.get("cost_usd"))
        if cost is not None and 0 <= cost <= MAX_STEP_COST_USD:
            usable += 1
        else:
            cost = 0.0
        held = row.get("usage_values")
        if isinstance(held, int) and not isinstance(held, bool) and held > usable:
            self.left_out += 1
        if not any(used.values()) and cost <= 0:
            return
        key = (str(row.get("agent_name")), str(row.get("agent_version")))
        model = self.models.get(key)
        if model is None:
            model = self.models[key] = model_of(*key, str(row.get("agent_kind")))
        for kind, n in used.items():
            if n:
                self.tokens[(model, kind)] = min(
                    self.tokens.get((model, kind), 0) + n, MAX_TOTAL_TOKENS
                )
        if cost > 0:
            self.cost[model] = self.cost.get(model, 0.0) + cost


def _unfinished(row: dict[str, Any]) -> bool:
    return row.get("status") in ("queued", "running")


def _age(row: dict[str, Any], now: datetime) -> float:
    """Seconds since a step was queued (infinite when that cannot be read)."""
    queued = _time(row.get("queued_at"))
    return (now - queued).total_seconds() if queued is not None else math.inf


def _is_reclaim(row: dict[str, Any]) -> bool:
    """A status change the lease reclaimer made: back to open with the attempt cleared,
    or failed with its 'lease expired' note (store/sql/*/queries/tickets.sql)."""
    if row.get("new_status") == "open":  # (an attempt id over 1 KiB is NULL, with its size)
        return row.get("attempt_id") is None and row.get("attempt_id_bytes") is None
    note = row.get("note")
    return (
        row.get("new_status") == "failed"
        and isinstance(note, str)
        and note.startswith("lease expired")
    )


def _time(value: Any) -> datetime | None:
    """A stored timestamp as an aware datetime, None when unreadable. The engine's own
    form (`2026-12-01T04:41:45.123Z`) the fast way; anything else as the engine reads it."""
    if type(value) is str and len(value) == 24 and value[10] == "T" and value[23] == "Z":
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
    try:
        return parse_timestamp(value)
    except (ValueError, OverflowError, OSError):
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _is_count(value: Any) -> bool:
    """Whether a step's token count can be read: an int in 0 .. `MAX_STEP_TOKENS`."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_STEP_TOKENS


def _count(value: Any) -> int:
    """A step's token count: 0 unless an int in 1 .. `MAX_STEP_TOKENS`."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_STEP_TOKENS:
        return value
    return 0


def model_for(registry: Registry) -> Callable[[str, str, str], str]:
    """`model_of` for `Tally.refresh`: the model an agent's definition names (`config.
    model`, else its kind's default), 'unknown' when that cannot be told."""

    def model_of(name: str, version: str, kind: str) -> str:
        from swarm_engine.errors import SwarmError

        try:
            spec = registry.agent(f"{name}@{version}")
        except SwarmError:
            return "unknown"
        model = spec.config.get("model")
        if isinstance(model, str) and model:
            return model
        if kind == "claude":
            from swarm_engine.agents.claude.settings import DEFAULT_MODEL

            return DEFAULT_MODEL
        return "unknown"

    return model_of


@dataclass
class StatusCounts:
    """Tickets per status, counted at most once per `COUNTS_TTL` seconds (thread-safe)."""

    value: dict[str, int] = field(default_factory=dict)
    at: float = -math.inf
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, store: Store) -> dict[str, int]:
        with self.lock:
            if time.monotonic() - self.at >= COUNTS_TTL:
                self.value = store.tickets.counts()
                self.at = time.monotonic()
            return dict(self.value)
