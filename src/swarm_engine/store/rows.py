"""Decoding stored rows into typed records: the one place that reads raw rows.

The store is a public interface, so a row may hold anything another SQLite client put
there: bytes that are not UTF-8, text in a numeric column, inputs that are not a JSON
object, timestamps in any form SQLite itself accepts, a value that slipped past a CHECK.
Decoding never raises. Each field that cannot be read as documented gets a fallback
value and one line in `defects` ("priority: not an integer ('high')"); the engine fails
such a ticket with that line, and every command still shows the row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from swarm_engine.records import (
    INPUTS_OVER,
    MAX_DESCRIPTION_BYTES,
    MAX_ERROR_BYTES,
    MAX_INPUTS_BYTES,
    MAX_NAME_BYTES,
    MAX_NOTE_BYTES,
    MAX_PATH_BYTES,
    MAX_RECORD_JSON_BYTES,
    MAX_RESULT_BYTES,
    MAX_SPEC_BYTES,
    MAX_STEP_COST_USD,
    MAX_STEP_DURATION_MS,
    MAX_STEP_TOKENS,
    MAX_TICKET_TIMEOUT_SECONDS,
    MAX_TITLE_BYTES,
    RECORD_JSON_OVER,
    RESULT_OVER,
    SPEC_OVER,
    DuplicateKey,
    TicketStatus,
    TooDeep,
    binary_not_text,
    inputs_too_big,
    json_type,
    readable_json,
    result_too_big,
    shown,
    text_over,
    text_too_big,
)
from swarm_engine.store.db import InvalidText, Row
from swarm_engine.store.timestamps import format_ts, parse_timestamp

STATUSES = frozenset(s.value for s in TicketStatus)
MODES = frozenset({"single", "workflow"})


def _show(value: Any, width: int = 30) -> str:
    return shown(value, width)


class Decoder:
    """Reads one row's columns leniently, collecting a line per defect."""

    def __init__(self, row: Row | Mapping[str, Any]) -> None:
        self.row = row
        self.keys = set(row.keys())
        self.defects: list[str] = []

    def raw(self, name: str) -> Any:
        return self.row[name] if name in self.keys else None

    def bad(self, name: str, why: str) -> None:
        self.defects.append(f"{name}: {why}")

    def text(self, name: str, default: str = "") -> str:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, InvalidText):
            self.bad(name, "not valid UTF-8 text")
            return str(value)
        if isinstance(value, bytes):
            self.bad(name, binary_not_text(value))
            return value.decode("utf-8", errors="replace")
        if not isinstance(value, str):
            return str(value)
        return value

    def bounded_text(self, name: str, limit: int) -> str:
        """A text column of at most `limit` UTF-8 bytes; a longer value is a defect (its
        ticket fails at its claim, so the engine never renews a lease on such a row). The
        ticket reads give only the first 200 characters of a longer one, and its size as
        `<name>_bytes` (`ticket_columns` in store/sql/*/queries/tickets.sql); a value read
        without its size is checked here and kept whole."""
        value = self.text(name)
        size = self.raw(f"{name}_bytes")
        if isinstance(size, int) and size > limit:
            self.bad(name, f"{size:,} bytes of text, {text_over(limit)}")
            return value
        why_not = text_too_big(value, limit)
        if why_not is not None:
            self.bad(name, why_not)
        return value

    def opt_text(self, name: str) -> str | None:
        return None if self.raw(name) is None else self.text(name)

    def opt_bounded_text(self, name: str, limit: int) -> str | None:
        """A nullable `bounded_text` column (a ticket's `error`)."""
        return None if self.raw(name) is None else self.bounded_text(name, limit)

    def sized_text(self, name: str, limit: int) -> str | None:
        """A nullable text column the store reads as NULL when it holds more than `limit`
        UTF-8 bytes, with its size as `<name>_bytes` (`vm_columns`, `engine_columns`,
        `agent_columns`, `run_columns`, `step_columns`, `event_columns`): such a value is a defect (`N bytes of text, more than the 1 KiB it
        may hold (not read)`) and None, never a start that could be acted on."""
        size = self.raw(f"{name}_bytes")
        if isinstance(size, int) and size > limit:
            self.bad(name, f"{size:,} bytes of text, {text_over(limit)} (not read)")
            return None
        return self.opt_text(name)

    def integer(
        self, name: str, default: int = 0, *, minimum: int | None = None, int64: bool = False
    ) -> int:
        """An integer column. Counters stay within +-2**62 (room to count up without
        overflow); `int64`: any 64-bit value (a priority, which is only compared)."""
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            self.bad(name, f"not an integer ({_show(value)})")
            return default
        low, high = (-(2**63), 2**63 - 1) if int64 else (-(2**62), 2**62)
        if not low <= value <= high:
            self.bad(name, f"out of range ({_show(value)})")
            return default
        if minimum is not None and value < minimum:
            self.bad(name, f"must be at least {minimum} (is {value})")
            return default
        return value

    def opt_integer(self, name: str) -> int | None:
        """A nullable integer column of a record (a count, a duration, an id): None,
        with a defect, for anything but a 64-bit integer (an integral float is one)."""
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            self.bad(name, f"not an integer ({_show(value)})")
            return None
        if not -(2**63) <= value < 2**63:
            self.bad(name, f"out of range ({_show(value)})")
            return None
        return value

    def opt_count(self, name: str) -> int | None:
        """A nullable count (`opt_integer`, and not negative): None, with a defect, for a
        negative one too."""
        value = self.opt_integer(name)
        if value is not None and value < 0:
            self.bad(name, f"negative ({value})")
            return None
        return value

    def number(self, name: str) -> float | None:
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        self.bad(name, f"not a number ({_show(value)})")
        return None

    def usage(self, name: str, most: float, what: str) -> float | int | None:
        """A usage value of a step or run (tokens, cost, a step's duration): as
        `opt_integer` (`number` for `cost_usd`), and None with a defect (`input_tokens:
        implausible (9223372036854775807: a step or run uses 0 to 2**40 of a kind), left
        out of totals`) when negative or over `most`, which no real run reaches
        (records.py: `MAX_STEP_TOKENS`): the store's sums leave it out alike."""
        value = self.number(name) if name in NUMBER_COLUMNS else self.opt_integer(name)
        if value is None:
            return None
        if not 0 <= value <= most:
            self.bad(name, f"implausible ({_show(value)}: {what}), left out of totals")
            return None
        return value

    def json(
        self, name: str, default: Any = None, too_big: Callable[[str], str | None] | None = None,
        *, unique_keys: bool = False,
    ) -> Any:  # fmt: skip
        """A JSON column; `too_big(text)` says why its text is too big to read, if it is.
        With `unique_keys`, an object holding a key twice, at any depth, is a defect
        (`inputs: duplicate key "a"`) and the value is read as `default`: SQL's
        `json_extract` reads the first of the two, Python the last."""
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bytes):
            self.bad(name, binary_not_text(value))
            return default
        if isinstance(value, InvalidText):
            self.bad(name, "not valid UTF-8 text")
            return default
        if not isinstance(value, str):
            self.bad(name, f"not JSON text ({_show(value)})")
            return default
        why_not = too_big(value) if too_big is not None else None
        if why_not is not None:
            self.bad(name, why_not)
            return default
        try:
            return readable_json(value, unique_keys=unique_keys)
        except DuplicateKey as exc:
            self.bad(name, exc.line)
            return default
        except TooDeep as exc:
            self.bad(name, f"JSON {exc}")
            return default
        except ValueError as exc:
            why = "" if isinstance(exc, json.JSONDecodeError) else f" ({exc})"
            self.bad(name, f"not valid JSON{why}")
            return default

    def sized_json(
        self, name: str, default: Any, too_big: Callable[[str], str | None],
        limit: int, over: str, *, unique_keys: bool = False,
    ) -> Any:  # fmt: skip
        """A JSON column the store leaves out when it holds more than `limit` bytes: the
        ticket reads give it only when it holds at most that, and its size always, as
        `<name>_bytes` (`ticket_columns` in store/sql/*/queries/tickets.sql); a larger value
        is a defect (`N bytes of JSON, ` + `over`), read as `default`. `too_big(text)`
        checks a value that was given (or a row read without its size). `unique_keys`: as
        `json` takes it."""
        size = self.raw(f"{name}_bytes")
        if isinstance(size, int) and size > limit:
            self.bad(name, f"{size:,} bytes of JSON, {over}")
            return default
        return self.json(name, default, too_big, unique_keys=unique_keys)

    def json_object(
        self, name: str, too_big: Callable[[str], str | None] | None = None,
        limit: int = 0, over: str = "", *, unique_keys: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """A JSON object column (read as `sized_json` reads it when `too_big` is given;
        `unique_keys` as `json` takes it)."""
        if too_big is None:
            value = self.json(name, {}, unique_keys=unique_keys)
        else:
            value = self.sized_json(name, {}, too_big, limit, over, unique_keys=unique_keys)
        if not isinstance(value, dict):
            self.bad(name, f"must be a JSON object, not {json_type(value)}")
            return {}
        return value

    def timestamp(self, name: str) -> datetime | None:
        value = self.raw(name)
        try:
            return parse_timestamp(value)
        except ValueError as exc:
            self.bad(name, str(exc) or "not a timestamp")
            return None

    def choice(self, name: str, allowed: frozenset[str], default: str) -> str:
        value = self.text(name, default)
        if value not in allowed:
            self.bad(name, f"unknown value {_show(value)} (one of {', '.join(sorted(allowed))})")
        return value


@dataclass(frozen=True, slots=True)
class Ticket:
    """One `tickets` row, decoded (see docs/schema.md for each column).

    `status` and `execution_mode` keep the stored text even when it is not a known
    value (then `defects` says so). Timestamps are aware UTC datetimes.
    """

    id: int
    title: str = ""
    description: str = ""
    status: str = "draft"
    execution_mode: str = "single"
    agent_id: str | None = None
    workflow_id: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    attempts: int = 0
    max_attempts: int = 3
    timeout_seconds: float | None = None
    result: Any = None
    error: str | None = None
    engine_id: str | None = None
    attempt_id: str | None = None
    lease_expires_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    claimed_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    defects: tuple[str, ...] = ()

    @property
    def problem(self) -> str | None:
        """Why this row cannot run, as one line naming the field(s); None if it can."""
        if not self.defects:
            return None
        more = f" (and {len(self.defects) - 1} more)" if len(self.defects) > 1 else ""
        return f"ticket {self.id} row is malformed: {self.defects[0]}{more}"

    @property
    def target(self) -> str:
        """What it runs: the agent, or `workflow:<name>`."""
        if self.execution_mode == "workflow":
            return f"workflow:{self.workflow_id or '?'}"
        return self.agent_id or "?"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: timestamps as stored-format strings, `defects` as a list."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = format_ts(value) if isinstance(value, datetime) else value
        out["defects"] = list(self.defects)
        return out


def decode_ticket(row: Row | Mapping[str, Any]) -> Ticket:
    """A `tickets` row as a `Ticket`. Never raises (see the module docstring)."""
    d = Decoder(row)
    ticket_id = d.raw("id")
    if not isinstance(ticket_id, int):  # INTEGER PRIMARY KEY: always an int in SQLite
        raise TypeError(f"tickets.id is {ticket_id!r}")
    timeout = d.number("timeout_seconds")
    if timeout is not None and not 0 < timeout <= MAX_TICKET_TIMEOUT_SECONDS:
        d.bad(
            "timeout_seconds",
            f"must be positive, at most {MAX_TICKET_TIMEOUT_SECONDS:.0f} (a year; is {timeout!r})",
        )
        timeout = None
    mode = d.choice("execution_mode", MODES, "single")
    agent_id = d.sized_text("agent_id", MAX_NAME_BYTES)  # (NULL past it: `ticket_columns`)
    workflow_id = d.sized_text("workflow_id", MAX_NAME_BYTES)
    status = d.choice("status", STATUSES, "draft")
    return Ticket(
        id=ticket_id,
        title=d.bounded_text("title", MAX_TITLE_BYTES),
        description=d.bounded_text("description", MAX_DESCRIPTION_BYTES),
        status=status,
        execution_mode=mode,
        agent_id=agent_id,
        workflow_id=workflow_id,
        inputs=d.json_object(
            "inputs", inputs_too_big, MAX_INPUTS_BYTES, INPUTS_OVER, unique_keys=True
        ),
        priority=d.integer("priority", int64=True),
        attempts=d.integer("attempts"),
        max_attempts=d.integer("max_attempts", 3, minimum=1),
        timeout_seconds=timeout,
        result=d.sized_json("result", None, result_too_big, MAX_RESULT_BYTES, RESULT_OVER),
        error=d.opt_bounded_text("error", MAX_ERROR_BYTES),
        engine_id=d.sized_text("engine_id", MAX_NAME_BYTES),
        attempt_id=d.sized_text("attempt_id", MAX_NAME_BYTES),
        lease_expires_at=d.timestamp("lease_expires_at"),
        created_at=d.timestamp("created_at"),
        updated_at=d.timestamp("updated_at"),
        claimed_at=d.timestamp("claimed_at"),
        started_at=d.timestamp("started_at"),
        completed_at=d.timestamp("completed_at"),
        defects=tuple(d.defects),
    )


JSON_COLUMNS = frozenset({"inputs", "outputs", "spec"})
SIZED_TEXT_COLUMNS = {"error": MAX_ERROR_BYTES, "stop_reason": MAX_ERROR_BYTES,
                      "note": MAX_NOTE_BYTES, "description": MAX_DESCRIPTION_BYTES}  # fmt: skip
"""Record text columns the store's reads of runs, steps and events measure in SQL (with
their size as `<name>_bytes`; `run_columns`, `step_columns`, `event_columns`): over their
cap, a defect, and only their first 200 characters are read. So is a definition's
`description` (`agent_columns`, `workflow_columns`)."""
NULLED_TEXT_COLUMNS = {
    **dict.fromkeys(("id", "host", "backend", "kind", "state", "isolation", "engine_id",
                     "name", "version", "attempt_id", "execution_mode", "workflow_name",
                     "workflow_version", "status", "step_id", "agent_name", "agent_version",
                     "agent_kind", "vm_id", "old_status", "new_status"), MAX_NAME_BYTES),
    **dict.fromkeys(("workspace", "socket_path", "overlay_path", "log_path"),
                    MAX_PATH_BYTES),
}  # fmt: skip
"""Text columns the store's reads of VMs, engines and definitions (`vm_columns`,
`engine_columns`, `agent_columns`, `workflow_columns`) and of runs, steps and events
(`run_columns`, `step_columns`, `event_columns`) measure in SQL and give as NULL over
their cap (`Decoder.sized_text`): names and paths, which are looked up and acted on, are
never cut."""
INTEGER_COLUMNS = frozenset(
    {
        "ticket_id", "run_id", "attempt", "retry_count", "duration_ms", "exit_code",
        "input_tokens", "output_tokens", "cache_creation_input_tokens",
        "cache_read_input_tokens", "turns", "owner_pid", "pid", "step_execution_id",
        "memory_mb", "vcpus", "max_vms", "busy_vms", "busy_now", "builtin",
        "unisolated_steps", "engines", "slots", "vms", "busy", "free",
    }
)  # fmt: skip
"""Record columns that hold an integer (or NULL) in every table and query that has them.
Not `id`: an INTEGER PRIMARY KEY always holds an integer, and the `id` of a VM or an
engine is text."""
COUNT_COLUMNS = frozenset(
    {"max_vms", "busy_vms", "busy_now", "memory_mb", "vcpus", "engines", "slots", "vms",
     "busy", "free", "negative_max_vms", "huge_max_vms"}
)  # fmt: skip
"""`INTEGER_COLUMNS` that count something (VMs, slots, MiB, CPUs): a negative value,
which no engine writes, is read as None with a defect, like any other unreadable one."""
NUMBER_COLUMNS = frozenset({"cost_usd"})
"""Record columns that hold a finite number (or NULL)."""
USAGE_BOUNDS = {
    **dict.fromkeys(
        ("input_tokens", "output_tokens", "cache_creation_input_tokens",
         "cache_read_input_tokens"),
        (MAX_STEP_TOKENS, "a step or run uses 0 to 2**40 of a kind"),
    ),
    "cost_usd": (MAX_STEP_COST_USD, "a step or run costs 0 to 1e6 USD"),
}  # fmt: skip
"""Usage columns of runs and steps, with the most a real one holds (records.py): past
it, or negative, a value is a defect (`Decoder.usage`) that no total counts."""
STEP_DURATION_BOUND = (MAX_STEP_DURATION_MS, "a step runs 0 to 366 days")
"""A step's `duration_ms` (a row with a `step_id`), bounded as `USAGE_BOUNDS`: a run's
is not, being any number of steps long."""
TIME_COLUMNS = frozenset(
    {
        "at", "created_at", "updated_at", "claimed_at", "started_at", "completed_at",
        "queued_at", "ready_at", "destroyed_at", "heartbeat_at", "stopped_at",
    }
)  # fmt: skip


def decode_record(row: Row | Mapping[str, Any]) -> dict[str, Any]:
    """Any other row (runs, steps, events, VMs, engines) as a plain dict, leniently:
    JSON columns parsed (None if unreadable, or a `spec` holding a key twice), timestamps
    normalized to the stored format (None if unreadable), `INTEGER_COLUMNS` an int and
    `NUMBER_COLUMNS` a float
    (None if anything else: text, a blob, a fraction, past 64 bits), text decoded;
    `defects` lists what could not be read (only present when something could not).

    This is the one decoding of these rows: the CLI shows what it gives, and the HTTP
    API's response models (`api/models.py`) find every field already of their type."""
    d = Decoder(row)
    out: dict[str, Any] = {}
    for key in row.keys():  # noqa: SIM118 (a Row iterates over its values)
        value = d.raw(key)
        if key.endswith("_bytes") and key[: -len("_bytes")] in d.keys:
            continue  # a sized column's size: read with the column, not handed on
        if key == "spec" and "spec_bytes" in d.keys:
            out[key] = d.sized_json(key, None, lambda _: None, MAX_SPEC_BYTES, SPEC_OVER,
                                    unique_keys=True)  # fmt: skip
        elif key in JSON_COLUMNS and f"{key}_bytes" in d.keys:
            out[key] = d.sized_json(key, None, lambda _: None, MAX_RECORD_JSON_BYTES,
                                    RECORD_JSON_OVER)  # fmt: skip
        elif key in NULLED_TEXT_COLUMNS and f"{key}_bytes" in d.keys:
            out[key] = d.sized_text(key, NULLED_TEXT_COLUMNS[key])
        elif key in SIZED_TEXT_COLUMNS and f"{key}_bytes" in d.keys:
            out[key] = d.opt_bounded_text(key, SIZED_TEXT_COLUMNS[key])
        elif key in JSON_COLUMNS:
            out[key] = d.json(key, unique_keys=key == "spec")
        elif key in TIME_COLUMNS:
            out[key] = format_ts(d.timestamp(key))
        elif key in USAGE_BOUNDS:
            out[key] = d.usage(key, *USAGE_BOUNDS[key])
        elif key == "duration_ms" and "step_id" in d.keys:
            out[key] = d.usage(key, *STEP_DURATION_BOUND)
        elif key == "duration_ms":  # a run's: any number of steps long, never negative
            out[key] = d.opt_integer(key)
            if out[key] is not None and out[key] < 0:
                d.bad(key, f"implausible ({_show(out[key])}: a run lasts 0 ms or more)")
                out[key] = None
        elif key in COUNT_COLUMNS:
            out[key] = d.opt_count(key)
        elif key in INTEGER_COLUMNS:
            out[key] = d.opt_integer(key)
        elif key in NUMBER_COLUMNS:
            out[key] = d.number(key)
        elif isinstance(value, InvalidText | bytes):
            out[key] = d.text(key)
        else:
            out[key] = value
    if d.defects:
        out["defects"] = d.defects
    return out


def as_mapping(row: Row) -> dict[str, Any]:
    """A row's values by column name, as stored (text that was not UTF-8 as
    `InvalidText`): for readers of long histories that check each value themselves."""
    return {key: row[i] for i, key in enumerate(row.keys())}
