"""Request and response bodies of the HTTP API (what the OpenAPI schema shows).

Responses are built from stored rows, which any writer may have filled with anything
(docs/schema.md). The store decodes them leniently (`store/rows.py`), once, for the CLI
and the API alike: each field of the documented type, or None and a line in `defects`.
`Record` models then find every stored field of its type; their own check (None, and
`unreadable value` in `defects`) is a last guard for a value the store did not decode, so
an odd row is shown, never answered with a server error
(tests/acceptance/test_odd_number_columns.py checks that it finds nothing to add).
Timestamps are the stored UTC ISO-8601 text (`2026-12-01T04:41:45.123Z`).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from swarm_engine.api.refs import REFERENCE
from swarm_engine.service.values import MAX_ID, MIN_INT

TicketStatusName = Literal["draft", "open", "claimed", "running", "done", "failed", "cancelled"]


class Record(BaseModel):
    """A stored row: values of the wrong type become None, named in `defects`."""

    model_config = ConfigDict(extra="ignore")

    defects: list[str] = Field(default_factory=list, description="Fields that could not be read.")

    @model_validator(mode="before")
    @classmethod
    def _lenient(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        defects = [str(d) for d in out.get("defects") or []]
        for name, adapter in _adapters(cls).items():
            if name not in out:
                continue
            try:
                out[name] = adapter.validate_python(out[name])
            except ValidationError:
                defects.append(f"{name}: unreadable value {str(out[name])[:40]!r}")
                out[name] = None
        out["defects"] = defects
        return out


@functools.cache
def _adapters(cls: type[Record]) -> dict[str, TypeAdapter[Any]]:
    return {
        name: TypeAdapter(info.annotation)
        for name, info in cls.model_fields.items()
        if name != "defects" and info.annotation is not None
    }


class Ticket(BaseModel):
    """A ticket (docs/schema.md, table `tickets`)."""

    id: int
    title: str
    description: str
    status: str = Field(description="draft, open, claimed, running, done, failed, cancelled")
    execution_mode: str
    agent_id: str | None
    workflow_id: str | None
    inputs: dict[str, Any]
    priority: int
    attempts: int
    max_attempts: int
    timeout_seconds: float | None
    result: Any = None
    error: str | None
    engine_id: str | None
    attempt_id: str | None
    lease_expires_at: str | None
    created_at: str | None
    updated_at: str | None
    claimed_at: str | None
    started_at: str | None
    completed_at: str | None
    defects: list[str] = Field(description="Fields of the stored row that could not be read.")


class Step(Record):
    """One step attempt (table `step_executions`), with `attempt` counted from 1 and its
    VM's `vm_backend` and `vm_isolation`."""

    id: int | None = None
    run_id: int | None = None
    step_id: str | None = None
    attempt: int | None = None
    retry_count: int | None = None
    agent_name: str | None = None
    agent_version: str | None = None
    agent_kind: str | None = None
    vm_id: str | None = None
    vm_backend: str | None = None
    vm_isolation: str | None = None
    status: str | None = None
    inputs: Any = None
    outputs: Any = None
    queued_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    duration_ms: int | None = None
    exit_code: int | None = None
    error: str | None = None
    log_path: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    turns: int | None = None
    stop_reason: str | None = None
    cost_usd: float | None = None
    left_out: list[str] = Field(
        default_factory=list,
        description="`inputs`, `outputs` and/or `error` left out of this answer (null here)"
        " to keep it within 16 MiB of values and errors (newest first; the newest run's and"
        " step's are always given): a page of one gives them, `GET /v1/runs/ID` or"
        " `GET /v1/runs/RUN/steps?before=ID+1&limit=1`.",
    )


class Run(Record):
    """One execution of a ticket (table `workflow_runs`), with its newest `steps` where
    asked (a run may have any number of steps: `steps_total` counts them all)."""

    id: int | None = None
    ticket_id: int | None = None
    attempt: int | None = None
    attempt_id: str | None = None
    engine_id: str | None = None
    execution_mode: str | None = None
    workflow_name: str | None = None
    workflow_version: str | None = None
    status: str | None = None
    inputs: Any = None
    outputs: Any = None
    error: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    duration_ms: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cost_usd: float | None = None
    unisolated_steps: int | None = None
    steps: list[Step] | None = Field(
        None,
        description="Its newest steps (at most 100), oldest first, where asked; the older "
        "ones: `GET /v1/runs/ID/steps?before=steps_before`.",
    )
    left_out: list[str] = Field(
        default_factory=list,
        description="`inputs`, `outputs` and/or `error` left out of this answer (null here)"
        " to keep it within 16 MiB of values and errors (newest first; the newest run's and"
        " step's are always given): a page of one gives them, `GET /v1/runs/ID` or"
        " `GET /v1/runs/RUN/steps?before=ID+1&limit=1`.",
    )
    steps_total: int | None = Field(None, description="How many steps the run has.")
    steps_before: int | None = Field(
        None,
        description="The `before` of `GET /v1/runs/ID/steps` for the steps left out; null "
        "when none is.",
    )


class Event(Record):
    """A status change of a ticket (table `ticket_events`)."""

    id: int | None = None
    ticket_id: int | None = None
    at: str | None = None
    old_status: str | None = None
    new_status: str | None = None
    engine_id: str | None = None
    attempt_id: str | None = None
    note: str | None = None


class TicketDetail(Ticket):
    """A ticket with its newest runs (each with its steps) and newest status events, each
    oldest first; the totals count them all, and `runs_before` / `events_before` (null when
    none is left out) are the `before` of `/v1/tickets/ID/runs` / `.../events` for the
    older ones."""

    runs: list[Run]
    events: list[Event]
    runs_total: int
    events_total: int
    runs_before: int | None
    events_before: int | None


class TicketPage(BaseModel):
    """Tickets, newest first. `next_cursor`: pass it as `cursor` for the next page; null
    on the last page."""

    items: list[Ticket]
    next_cursor: int | None


class NewTicket(BaseModel):
    """A ticket to create: exactly one of `agent` and `workflow`. Strict: a number is a
    JSON number (an integer for an int field), a boolean `true` or `false`, text a string:
    `"5"` or `true` for `priority`, `"yes"` for `draft` are 422s naming the field."""

    model_config = ConfigDict(extra="forbid", strict=True)

    title: str = Field(examples=["count words"])  # at most 64 KiB (MAX_TITLE_BYTES): 400
    description: str = ""
    agent: Annotated[str | None, REFERENCE] = Field(None, max_length=200, examples=["word-count"])
    workflow: Annotated[str | None, REFERENCE] = Field(None, max_length=200)
    inputs: dict[str, Any] = Field(default_factory=dict, examples=[{"text": "hello there"}])
    priority: int = Field(0, ge=MIN_INT, le=MAX_ID, description="Higher is claimed first.")
    max_attempts: int = Field(3, ge=1, le=100)
    timeout_seconds: float | None = Field(None, ge=0.001, le=365 * 86400.0, allow_inf_nan=False)
    draft: bool = Field(False, description="Create it as a draft (no engine runs it yet).")


class TicketIds(BaseModel):
    """Tickets to act on at once (at most 1000); strict, as `NewTicket`: ids are JSON
    integers."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ids: list[Annotated[int, Field(ge=MIN_INT, le=MAX_ID)]] = Field(min_length=1, max_length=1000)


class Skipped(BaseModel):
    id: int
    reason: str


class BulkResult(BaseModel):
    """The tickets a bulk action changed, and why each other one was left as it was."""

    changed: list[int]
    skipped: list[Skipped]


class VM(Record):
    """A VM any engine booted (table `vms`)."""

    id: str | None = None
    backend: str | None = None
    host: str | None = None
    engine_id: str | None = None
    owner_pid: int | None = None
    pid: int | None = None
    state: str | None = None
    step_execution_id: int | None = None
    workspace: str | None = None
    memory_mb: int | None = None
    vcpus: int | None = None
    isolation: str | None = None
    created_at: str | None = None
    ready_at: str | None = None
    destroyed_at: str | None = None
    error: str | None = None


class Engine(Record):
    """An engine that has not stopped (table `engines`); `busy_vms`: VMs it holds now."""

    id: str | None = None
    kind: str | None = None
    host: str | None = None
    pid: int | None = None
    max_vms: int | None = None
    backend: str | None = None
    state: str | None = None
    busy_vms: int | None = None
    started_at: str | None = None
    heartbeat_at: str | None = None


class Host(Record):
    """A host with a live engine or VM: its engines, VM slots, and how many are busy."""

    host: str | None = None
    engines: int | None = None
    slots: int | None = None
    vms: int | None = None
    busy: int | None = None
    free: int | None = None


class Definition(Record):
    """A registered agent or workflow as stored (`spec`: the validated definition)."""

    name: str | None = None
    version: str | None = None
    kind: str | None = None
    description: str | None = None
    builtin: int | None = None
    spec: Any = None
    created_at: str | None = None


class Usage(BaseModel):
    """Tokens and cost of model API calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0


class ModelUsage(Usage):
    model: str


class UsageReport(BaseModel):
    """Usage over every finished step (steps are counted about 10 s after they end)."""

    total: Usage
    by_model: list[ModelUsage]
    left_out_steps: int = 0
    """Finished steps with a token count or cost (or duration) left out of these sums:
    implausible or unreadable, written by another client (`swarm_step_usage_left_out`)."""


class Status(BaseModel):
    """The fleet at a glance: tickets per status, hosts, engines, live VMs, recent runs."""

    tickets: dict[str, int]
    hosts: list[Host]
    engines: list[Engine]
    vms: list[VM]
    recent_runs: list[Run]
    usage: Usage


class ErrorBody(BaseModel):
    """Every error: a short code and one line saying what is wrong."""

    error: Literal[
        "bad_request", "unauthorized", "not_found", "method_not_allowed", "conflict",
        "payload_too_large", "invalid_request", "invalid_definition", "refused_by_store",
        "store_unavailable", "internal",
    ]  # fmt: skip
    message: str
    details: list[dict[str, Any]] | None = None


class Health(BaseModel):
    status: Literal["ok"] = "ok"
