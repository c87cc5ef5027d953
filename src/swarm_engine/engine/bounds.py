"""The engine's own writes, bounded where they are made: a step's rendered inputs (before
its row is written or they are sent into a VM), a step's outputs (before its end is
written or a later step's templates see them) and a ticket's result (before the run's end
is written). Each is measured (`records.json_size`: a template's shared value is measured
once, never written out many times) and refused over its cap with one line; one within
it is written once (`records.JsonText`), the text the store then stores as it is.

The caps are those of the store's readers (`records.MAX_RECORD_JSON_BYTES`,
`MAX_RESULT_BYTES`) and the documented bound of a step's outputs
(`agents.files.MAX_OUTPUTS_BYTES`); the nesting is that of the readers too
(`records.MAX_READ_DEPTH`, 128 levels of arrays and objects): the engine never stores a
row its own readers refuse. A ticket's inputs nest at most 64 levels when a client gives
them, but a template nests what it names deeper (a step's inputs naming `${inputs.x}`
55 levels down, or another step's outputs): such a step fails before its row is written
or any VM boots for it.
"""

from __future__ import annotations

import json
from typing import Any

from swarm_engine.agents.files import MAX_OUTPUTS_BYTES
from swarm_engine.errors import AgentError
from swarm_engine.records import (
    MAX_READ_DEPTH,
    MAX_RECORD_JSON_BYTES,
    MAX_RESULT_BYTES,
    JsonText,
    JsonTooBig,
    JsonTooDeep,
    bounded_json,
    mib,
    stored_json,
)

STEP_INPUTS_BYTES = MAX_RECORD_JSON_BYTES
"""A step's rendered inputs, as its row stores them, hold at most this much JSON (bytes)."""
STEP_OUTPUTS_BYTES = MAX_OUTPUTS_BYTES
"""A step's outputs (every key: `stdout`, `stderr`, `exit_code`, an outputs file's), as its
row stores them, hold at most this much JSON (bytes)."""
RESULT_BYTES = MAX_RESULT_BYTES
"""A ticket's result, as stored, holds at most this much JSON (bytes)."""


def _over(exc: JsonTooBig, whose: str) -> str:
    return f"{exc.size:,} bytes of JSON, more than the {mib(exc.limit)} {whose} may hold"


def _deep(exc: JsonTooDeep, whose: str) -> str:
    return f"JSON nested deeper than the {exc.limit} levels {whose} may have"


def step_inputs_json(inputs: Any) -> JsonText:
    """A step's rendered `inputs` as its row stores them (an object as it is, another
    value as `{"value": ...}`), measured before it is written. `AgentError` (one line,
    which the caller prefixes with `inputs: `, as for inputs that do not render: `N bytes
    of JSON, more than the 8 MiB a step's inputs may hold`) over `STEP_INPUTS_BYTES`,
    nested deeper than `MAX_READ_DEPTH` (`JSON nested deeper than the 128 levels a step's
    inputs may have`), or for a value JSON cannot hold."""
    row = inputs if isinstance(inputs, dict) else {"value": inputs}
    try:
        return bounded_json(row, STEP_INPUTS_BYTES, MAX_READ_DEPTH)
    except JsonTooBig as exc:
        raise AgentError(_over(exc, "a step's inputs")) from None
    except JsonTooDeep as exc:
        raise AgentError(_deep(exc, "a step's inputs")) from None
    except (ValueError, TypeError) as exc:
        raise AgentError(f"cannot be written as JSON: {exc}") from None


def step_outputs_json(outputs: dict[str, Any]) -> JsonText:
    """A step's `outputs` as its row stores them, measured before anything is written,
    each NUL in a string or key stored as U+FFFD (`records.stored_json`).
    `AgentError` (one line: `outputs: N bytes of JSON, more than the 4 MiB a step's
    outputs may hold (not stored)`) over `STEP_OUTPUTS_BYTES`, nested deeper than
    `MAX_READ_DEPTH` (`outputs: JSON nested deeper than the 128 levels a step's outputs
    may have (not stored)`), or for a value JSON cannot hold."""
    return stored_outputs(outputs)[1]


def stored_outputs(outputs: dict[str, Any]) -> tuple[dict[str, Any], JsonText]:
    """`step_outputs_json(outputs)` and the outputs that later steps' templates, the
    ticket's result and the step's event see: the stored ones, read back from that text
    when a NUL in them became U+FFFD (else `outputs` as they are, not read back).
    `AgentError` as `step_outputs_json`."""
    try:
        written = bounded_json(outputs, STEP_OUTPUTS_BYTES, MAX_READ_DEPTH)
    except JsonTooBig as exc:
        over = _over(exc, "a step's outputs")
        raise AgentError(f"outputs: {over} (not stored)") from None
    except JsonTooDeep as exc:
        deep = _deep(exc, "a step's outputs")
        raise AgentError(f"outputs: {deep} (not stored)") from None
    except (ValueError, TypeError) as exc:
        raise AgentError(f"outputs cannot be written as JSON: {exc}") from None
    stored = stored_json(written.text)
    if stored is written.text:  # (no NUL: one scan in C)
        return outputs, written
    try:
        return json.loads(stored), JsonText(stored, written.depth)
    except (ValueError, RecursionError):
        raise AgentError("outputs cannot be written as JSON: nested too deep") from None


def result_json(result: Any) -> JsonText:
    """A ticket's `result` (a workflow's `outputs:` rendered) as stored, measured before
    it is written, each NUL in a string or key stored as U+FFFD (`records.stored_json`).
    `AgentError` (one line: `result: N bytes of JSON, more than the 8 MiB a ticket's
    result may hold (not stored)`) over `RESULT_BYTES`, or nested deeper than
    `MAX_READ_DEPTH` (`result: JSON nested deeper than the 128 levels a ticket's result
    may have (not stored)`)."""
    try:
        written = bounded_json(result, RESULT_BYTES, MAX_READ_DEPTH)
        return JsonText(stored_json(written.text), written.depth)
    except JsonTooBig as exc:
        over = _over(exc, "a ticket's result")
        raise AgentError(f"result: {over} (not stored)") from None
    except JsonTooDeep as exc:
        deep = _deep(exc, "a ticket's result")
        raise AgentError(f"result: {deep} (not stored)") from None
    except (ValueError, TypeError) as exc:
        raise AgentError(f"result cannot be written as JSON: {exc}") from None


def combined_json(parts: dict[str, JsonText]) -> JsonText:
    """The object `{step id: outputs}` (a workflow's result by default: its leaf steps'
    outputs) written from each part's text, as `json.dumps` writes it, without writing
    any part again; `AgentError` (one line, as `result_json`) when it would be over
    `RESULT_BYTES` (three steps' legal 3 MiB outputs make 9 MiB), or nested deeper than
    `MAX_READ_DEPTH` (each part one level deeper than itself): measured before it is
    joined."""
    depth = 1 + max((t.depth for t in parts.values()), default=0)
    if depth > MAX_READ_DEPTH:
        deep = _deep(JsonTooDeep(MAX_READ_DEPTH), "a ticket's result")
        raise AgentError(f"result: {deep} (not stored)")
    keys = {key: json.dumps(key) for key in parts}
    size = 2 + sum(len(keys[k]) + 2 + len(t.text) for k, t in parts.items())
    size += 2 * max(len(parts) - 1, 0)
    if size > RESULT_BYTES:
        over = _over(JsonTooBig(size, RESULT_BYTES), "a ticket's result")
        raise AgentError(f"result: {over} (not stored)")
    text = "{" + ", ".join(f"{keys[k]}: {t.text}" for k, t in parts.items()) + "}"
    return JsonText(text, depth)


class RunBudgetError(AgentError):
    """A value refused by `RunBudget.charge`: its line names what passed the limit (the
    value, by the caller's prefix, or the log that passed it first), so callers add no
    prefix of their own."""


class RunBudget:
    """What one run may store in its steps' rows: the JSON of every attempt's inputs and
    outputs, as stored, and its steps' live logs (`step_logs`), at most `limit` bytes in
    all (the `max_run_stored_bytes` setting). Each row is bounded by itself, but a run
    repeats them: a ticket's 3 MiB of inputs named by each of 100 steps stored 300 MiB.
    A value is measured before it is written; one that would pass the limit is refused
    with one line (`AgentError`), never written, and fails its step and so the run. A log
    is a stream: the chunk that would pass the limit and the rest are not stored (one
    line says so in their place; the log file keeps them), and the run fails (`over`).

    Per run, not per ticket, on purpose (docs/schema.md, "Where a result is stored"): a
    budget summed over a ticket's runs would leave a ticket cut by it unable to run again
    (its reopen would fail at once), bound nothing a client could not pass with new
    tickets, and cost each run's start a read of every earlier value on SQLite."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.over: str | None = None
        """Why the run fails, once a log passed the limit: every later charge is refused."""

    def fits(self, size: int) -> bool:
        """Whether `size` more bytes may still be stored."""
        return self.over is None and self.used + size <= self.limit

    def _line(self, what: str, size: int, kind: str = "") -> str:
        return (
            f"{what}{size:,} bytes{kind} would bring the run's stored step values to"
            f" {self.used + size:,} bytes, more than the {mib(self.limit)} a run may store"
            " (setting max_run_stored_bytes)"
        )

    def charge(self, text: JsonText, prefix: str = "") -> None:
        """Count `text` (a row's value, about to be written) against the run's limit, or
        `RunBudgetError` (`<prefix>N bytes of JSON would bring the run's stored step values to M
        bytes, more than the 64 MiB a run may store (setting max_run_stored_bytes)`; once
        a log passed it, `over`)."""
        if self.over is not None:
            raise RunBudgetError(self.over)
        size = len(text.text)  # (ASCII: its size in bytes as stored)
        if not self.fits(size):
            raise RunBudgetError(self._line(prefix, size, " of JSON"))
        self.used += size

    def log_chunk(self, text: str, step_id: str) -> str:
        """What to store of a piece of step `step_id`'s log: `text` if it fits; else, once,
        a line saying the rest is not stored (setting `over`), then nothing."""
        if self.over is not None:
            return ""
        size = len(text.encode("utf-8", "replace"))
        if self.fits(size):
            self.used += size
            return text
        self.over = self._line(f"log of step {step_id!r}: ", size)
        return (
            f"\n[... the rest of this log is not stored: the run's steps reached the"
            f" {mib(self.limit)} of max_run_stored_bytes; the step's log file has it ...]\n"
        )
