"""Execution records: `workflow_runs` (one per ticket attempt) and `step_executions`
(one per step attempt). Writes are fenced: a run whose attempt no longer holds its
ticket (reclaimed by another engine) cannot be written any more.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from swarm_engine.errors import NotFoundError, StaleAttemptError, StoreIntegrityError
from swarm_engine.records import MAX_RECORD_JSON_BYTES, JsonText, Usage, json_text
from swarm_engine.store.db import Database, Row
from swarm_engine.store.errortext import not_run
from swarm_engine.store.queries import load
from swarm_engine.store.rows import Ticket, as_mapping, decode_record
from swarm_engine.store.tickets import BEFORE_ALL, MAX_ID, MIN_ID, TicketStore, first_after

UNRECORDED_END = "ended unrecorded: "
"""How the error of a run begins whose end the store refused, and the failing of its
ticket too (`RunStore.end_unrecorded`): the mark, matched by the ticket statements, that
keeps the ticket from being re-queued when its lease runs out."""


"""Why a step whose row was queued but that never started was not run, when the run's
end gives no reason of its own (`not run: ...`)."""


@dataclass(frozen=True)
class SkippedStep:
    """A step of a run's plan that never had a row: recorded `skipped` with the run's
    end (`not run: WHY`)."""

    step_id: str
    agent_name: str
    agent_version: str
    agent_kind: str


ALL_VALUES = MAX_RECORD_JSON_BYTES
"""`values_cap` of a read that hands over every `inputs` and `outputs` (up to the cap any
value has)."""


def _cap(values: bool, errors: bool = True) -> dict[str, Any]:
    """The `values_cap` of a read (every value, or none: -1) and its `errors` (whether
    `error` is read: a view reads it with the values, `run_values`)."""
    return {"values_cap": ALL_VALUES if values else -1, "errors": errors}


class RunStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.tickets = TicketStore(db)
        self.q = load(db.dialect, "runs")

    def start_run(
        self,
        ticket: Ticket,
        *,
        engine_id: str,
        workflow_name: str | None,
        workflow_version: str | None,
        inputs: dict[str, Any],
    ) -> int:
        """Create the run and move the ticket to `running`, in one transaction."""
        attempt_id = ticket.attempt_id
        assert attempt_id is not None

        def start() -> Row | None:  # only SQL: run again if rolled back (store/rerun.py)
            self.tickets.mark_running(ticket.id, attempt_id)
            return self.db.one(
                self.q.start_run,
                {
                    "ticket_id": ticket.id,
                    "attempt": ticket.attempts,
                    "attempt_id": ticket.attempt_id,
                    "engine_id": engine_id,
                    "mode": ticket.execution_mode
                    if ticket.execution_mode in ("single", "workflow")
                    else "single",
                    "workflow_name": workflow_name,
                    "workflow_version": workflow_version,
                    "inputs": json.dumps(inputs, default=str),
                },
            )

        row = self.db.atomic(start)
        if row is None:  # a trigger's RAISE(IGNORE): the store refused it, silently
            raise StoreIntegrityError(
                f"ticket {ticket.id}: the store did not keep the run's row (a trigger?)"
            )
        return int(row[0])

    def add_step(
        self,
        run_id: int,
        *,
        step_id: str,
        agent_name: str,
        agent_version: str,
        agent_kind: str,
        inputs: dict[str, Any] | JsonText,
        retry_count: int = 0,
        status: str = "queued",
        error: str | None = None,
    ) -> int:
        row = self.db.one(
            self.q.add_step,
            {
                "run_id": run_id,
                "step_id": step_id,
                "agent_name": agent_name,
                "agent_version": agent_version,
                "agent_kind": agent_kind,
                "inputs": json_text(inputs),
                "retry_count": retry_count,
                "status": status,
                "error": error,
            },
        )
        if row is None:
            raise StaleAttemptError(f"run {run_id} no longer holds its ticket")
        return int(row[0])

    def step_started(self, step_exec_id: int, vm_id: str) -> None:
        done = self.db.run(self.q.step_started, {"id": step_exec_id, "vm_id": vm_id})
        self._fenced_step(done.rowcount, step_exec_id)

    def step_finished(
        self,
        step_exec_id: int,
        *,
        status: str,
        outputs: dict[str, Any] | JsonText | None,
        exit_code: int | None,
        error: str | None,
        usage: Usage,
        log_path: str | None = None,
    ) -> None:
        args = {
            "id": step_exec_id,
            "status": status,
            "outputs": None if outputs is None else json_text(outputs),
            "exit_code": exit_code,
            "error": error,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens,
            "turns": usage.turns,
            "stop_reason": usage.stop_reason,
            "cost_usd": usage.cost_usd,
            "log_path": log_path,
        }
        self._fenced_step(self.db.run(self.q.step_finished, args).rowcount, step_exec_id)

    def finish_run(
        self,
        run_id: int,
        ticket: Ticket,
        *,
        status: str,
        outputs: Any = None,
        error: str | None = None,
        ticket_status: str | None = None,
        outputs_in_steps: bool = False,
        skipped: Sequence[SkippedStep] = (),
        why: str | None = None,
    ) -> None:
        """Close the run (usage rolled up from its steps) and the ticket, atomically.
        Its steps that never had a row (`skipped`) and those queued but never started are
        recorded `skipped`, `not run: WHY` (`why`, else `NOT_STARTED`); a step still
        running, `cancelled`.

        `ticket_status` defaults to the run status; 'open' re-queues the ticket (a retry).
        A cancelled ticket keeps its status; the run is recorded as cancelled.
        `outputs` becomes the ticket's `result` when done; `workflow_runs.outputs` gets it
        too unless `outputs_in_steps` (it only repeats step rows: stored once, issue 8.5).
        A `JsonText` is written as it is (measured against its cap by the engine).
        """
        attempt_id = ticket.attempt_id
        assert attempt_id is not None

        def close(status: str, error: str | None) -> None:  # only SQL: run again (rerun.py)
            held = self.db.one(self.q.held_status, {"run_id": run_id})
            if held is None:
                raise StaleAttemptError(f"run {run_id} no longer holds its ticket")
            self._skip(run_id, skipped, why)
            cancelled = held[0] == "cancelled"
            if cancelled:
                status, error = "cancelled", error or "cancelled by user"
            keep = outputs is not None and not outputs_in_steps
            self.db.run(
                self.q.close_run,
                {
                    "run_id": run_id,
                    "status": status,
                    "outputs": json_text(outputs) if keep else None,
                    "error": error,
                },
            )
            self.db.run(self.q.cancel_open_steps, {"run_id": run_id, "not_run": not_run(why)})
            # a run stopped for a cancel whose ticket was put back meanwhile (a cancel, then
            # a reopen, by another writer) closes as cancelled and leaves the ticket alone
            if not cancelled and status != "cancelled":
                self.tickets.finish(
                    ticket.id,
                    attempt_id,
                    status=ticket_status or status,
                    result=outputs if status == "done" else None,
                    error=error,
                )

        self.db.atomic(lambda: close(status, error))  # (each try from the arguments)

    def abandon_run(self, run_id: int, error: str, skipped: Sequence[SkippedStep] = ()) -> None:
        """Close a run its own engine stopped because its attempt lost the ticket (and the
        run's unfinished steps: running ones failed with `error`, the ones that never
        started, and `skipped`, `not run: ERROR`). Not fenced: it only closes that run's
        own rows."""

        def close() -> None:  # only SQL: run again if rolled back (store/rerun.py)
            self._skip(run_id, skipped, error)
            args = {"run_id": run_id, "error": error, "not_run": not_run(error)}
            self.db.run(self.q.abandon_steps, args)
            self.db.run(self.q.abandon_run, {"run_id": run_id, "error": error})

        self.db.atomic(close)

    def cancel_run(
        self, run_id: int, error: str, skipped: Sequence[SkippedStep] = (), why: str | None = None
    ) -> None:
        """Close as cancelled a run its own engine stopped for a cancel, when the ticket
        was reopened before the run's end could be recorded (and its unfinished steps, as
        `finish_run` does). Not fenced: it only closes that run's own rows."""

        def close() -> None:  # only SQL: run again if rolled back (store/rerun.py)
            self._skip(run_id, skipped, why)
            self.db.run(self.q.cancel_open_steps, {"run_id": run_id, "not_run": not_run(why)})
            self.db.run(self.q.cancel_run, {"run_id": run_id, "error": error})

        self.db.atomic(close)

    def _skip(self, run_id: int, skipped: Sequence[SkippedStep], why: str | None) -> None:
        """(In the caller's transaction.) A `skipped` row for each step that never had one."""
        for step in skipped:
            self.db.run(
                self.q.add_skipped_step,
                {"run_id": run_id, "step_id": step.step_id, "agent_name": step.agent_name,
                 "agent_version": step.agent_version, "agent_kind": step.agent_kind,
                 "error": not_run(why)},
            )  # fmt: skip

    def abandon_attempt(self, attempt_id: str, error: str) -> int:
        """Close (`failed`) whatever run of this attempt is still marked running, and its
        unfinished steps: the engine's last word as the attempt's task ends, however it
        ended (only that attempt's own rows). Returns how many runs it closed."""

        def close() -> int:  # only SQL: run again if rolled back (store/rerun.py)
            args = {"attempt_id": attempt_id, "error": error, "not_run": not_run(error)}
            self.db.run(self.q.abandon_attempt_steps, args)
            return int(self.db.run(self.q.abandon_attempt_runs, args).rowcount)

        return self.db.atomic(close)

    def end_unrecorded(self, ticket: Ticket, error: str) -> bool:
        """The attempt's run ended, and the store refused to record it and to fail its
        ticket as well: close the run (and its unfinished steps) `failed`, its error
        `UNRECORDED_END` + `error`; an attempt without a run (its start was refused) gets
        a run row so closed. The ticket is left as the store keeps it (live, with this
        attempt's lease), and never re-queued: no reclaim takes a ticket whose attempt's
        run is so closed, and `any_unfinished` does not count it. Not fenced: only that
        attempt's own rows. Returns whether the mark was written."""
        assert ticket.attempt_id is not None
        args = {"attempt_id": ticket.attempt_id, "error": UNRECORDED_END + error,
                "not_run": not_run(UNRECORDED_END + error)}  # fmt: skip

        def close() -> bool:  # only SQL: run again if rolled back (store/rerun.py)
            self.db.run(self.q.end_unrecorded_steps, args)
            if self.db.run(self.q.end_unrecorded_run, args).rowcount == 1:
                return True
            row = self.db.one(
                self.q.end_unrecorded_insert,
                {
                    **args,
                    "ticket_id": ticket.id,
                    "attempt": ticket.attempts,
                    "engine_id": ticket.engine_id,
                    "mode": ticket.execution_mode
                    if ticket.execution_mode in ("single", "workflow")
                    else "single",
                    "inputs": json.dumps(ticket.inputs, default=str),
                },
            )
            return row is not None

        return self.db.atomic(close)

    # -- reading ---------------------------------------------------------------------------
    def get_run(self, run_id: int) -> dict[str, Any]:
        row = self.db.one(self.q.get_run, {"run_id": run_id, **_cap(True)})
        if row is None:
            raise NotFoundError(f"run {run_id} does not exist")
        return decode_record(row)

    def runs_for_ticket(
        self,
        ticket_id: int,
        *,
        before: int | None = None,
        limit: int = MAX_ID,
        values: bool = True,
        errors: bool = True,
    ) -> list[dict[str, Any]]:
        """The newest `limit` runs (default: all) of a ticket with an id below `before` (None:
        any), oldest first. `values=False`: their `inputs` and `outputs` are not read (None;
        see `run_values`); `errors=False`: nor their `error`."""
        if before is not None and before <= MIN_ID:
            return []  # nothing is below the smallest id a row can hold
        args = {
            "ticket_id": ticket_id,
            "through": MAX_ID if before is None else before - 1,
            "limit": limit,
            **_cap(values, errors),
        }
        rows = self.db.all(self.q.runs_for_ticket, args)
        return [decode_record(r) for r in reversed(rows)]

    def count_for_ticket(self, ticket_id: int) -> int:
        """How many runs a ticket has."""
        row = self.db.one(self.q.count_runs_for_ticket, {"ticket_id": ticket_id})
        return int(row[0]) if row is not None else 0

    def runs_for_workflow(
        self, name: str, limit: int = 50, *, values: bool = True, errors: bool = True
    ) -> list[dict[str, Any]]:
        args = {"name": name, "limit": limit, **_cap(values, errors)}
        rows = self.db.all(self.q.runs_for_workflow, args)
        return [decode_record(r) for r in rows]

    def recent_runs(
        self, limit: int = 10, *, values: bool = True, errors: bool = True
    ) -> list[dict[str, Any]]:
        """The newest runs, each with `unisolated_steps`: its steps whose VM had no isolation."""
        args = {"limit": limit, **_cap(values, errors)}
        return [decode_record(r) for r in self.db.all(self.q.recent_runs, args)]

    def usage_totals(self) -> dict[str, Any]:
        """API usage summed over every run: the four token counts and `cost_usd`, and
        `implausible_runs`, the runs whose usage the sums left out. Values the query
        computed (numbers, never a stored value), read as they are: a total is not
        bounded as a run's own usage is (`decode_record`)."""
        row = self.db.one(self.q.usage_totals)
        return as_mapping(row) if row is not None else {}

    def steps(self, run_id: int) -> list[dict[str, Any]]:
        """A run's steps, each with `vm_backend` and `vm_isolation` of the VM it ran in:
        all of them (a run may have any number: views read `last_steps` or `steps_from`)."""
        args = {"run_id": run_id, **_cap(True)}
        return [decode_record(r) for r in self.db.all(self.q.steps, args)]

    def last_steps(
        self,
        run_id: int,
        limit: int,
        *,
        before: int | None = None,
        values: bool = True,
        errors: bool = True,
    ) -> list[dict[str, Any]]:
        """A run's newest `limit` steps with an id below `before` (None: any), oldest
        first, as `steps` gives them (`values=False`: without `inputs` and `outputs`,
        None; see `step_values`; `errors=False`: without `error`)."""
        if before is not None and before <= MIN_ID:
            return []  # nothing is below the smallest id a row can hold
        args = {"run_id": run_id, "limit": limit, **_cap(values, errors),
                "through": MAX_ID if before is None else before - 1}  # fmt: skip
        rows = self.db.all(self.q.last_steps, args)
        return [decode_record(r) for r in reversed(rows)]

    def steps_from(
        self,
        run_id: int,
        after: int,
        limit: int,
        *,
        step_id: str | None = None,
        values: bool = True,
    ) -> list[dict[str, Any]]:
        """A run's next `limit` steps with an id above `after` (`BEFORE_ALL`: from its
        first, whatever its id; only `step_id`'s attempts
        when given), oldest first, as `steps` gives them: a run read page by page
        (`values=False`: without `inputs` and `outputs`)."""
        first = first_after(after)
        if first is None:
            return []
        args: dict[str, Any] = {"run_id": run_id, "first": first, "limit": limit,
                                **_cap(values)}  # fmt: skip
        if step_id is None:
            rows = self.db.all(self.q.steps_from, args)
        else:
            rows = self.db.all(self.q.step_attempts_from, {**args, "step_id": step_id})
        return [decode_record(r) for r in rows]

    def steps_by_ids(
        self, run_id: int, ids: Iterable[int], *, values: bool = True
    ) -> list[dict[str, Any]]:
        """These steps of run `run_id` (those that are its), oldest first, as `steps`
        gives them (`values=False`: without `inputs` and `outputs`)."""
        args = {"run_id": run_id, "ids": sorted(set(ids)), **_cap(values)}
        rows = self.db.all(self.q.steps_by_ids, args)
        return [decode_record(r) for r in rows]

    def run_values(
        self, ids: Iterable[int], budget: int, *, always: bool
    ) -> dict[int, dict[str, Any]]:
        """The `inputs`, `outputs` and `error` of these runs, newest first, while their
        sizes add up to at most `budget` bytes (`always`: the newest one's whatever its
        size, up to the 8 MiB any value and the 64 KiB any error may hold):
        `{id: {"inputs", "outputs", "error", "shown", "total", "<name>_size"}}`, where
        `shown` is whether they were read, `total` the bytes read up to it, and
        `<name>_size` their sizes (None: none) whether read or not."""
        args = {"ids": sorted(set(ids)), "budget": budget, "always": always}
        return self._values(self.q.run_values, args)

    def step_values(
        self, run_id: int, ids: Iterable[int], budget: int, *, always: bool
    ) -> dict[int, dict[str, Any]]:
        """`run_values` of these steps of run `run_id`."""
        args = {"run_id": run_id, "ids": sorted(set(ids)), "budget": budget, "always": always}
        return self._values(self.q.step_values, args)

    def _values(self, query: str, args: dict[str, Any]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for row in self.db.all(query, args):
            record = decode_record(row)
            if isinstance(record.get("id"), int):
                out[record["id"]] = record
        return out

    def first_step_ids(self, run_id: int, limit: int) -> list[Any]:
        """The `step_id`s of a run's first `limit` steps, as stored (any value; None for
        one over 1 KiB, `MAX_NAME_BYTES`, which is not read)."""
        rows = self.db.all(self.q.first_step_ids, {"run_id": run_id, "limit": limit})
        return [r[0] for r in rows]

    def count_steps(self, run_id: int) -> int:
        """How many step executions a run has."""
        row = self.db.one(self.q.count_steps, {"run_id": run_id})
        return int(row[0]) if row is not None else 0

    def steps_after(self, after: int = BEFORE_ALL, limit: int = 1000) -> list[dict[str, Any]]:
        """For metrics: step executions with an id above `after` (`BEFORE_ALL`: every
        one), oldest first: `id`,
        `status`, the agent (`agent_name`, `agent_version`, `agent_kind`; these names None
        over 1 KiB), `queued_at`, `duration_ms` and the usage columns. Walks the primary
        key. Values as stored (`id` an int; the rest read leniently by the caller): a long
        history is read fast."""
        first = first_after(after)
        if first is None:
            return []
        rows = self.db.all(self.q.steps_after, {"first": first, "limit": limit})
        return [as_mapping(r) for r in rows]

    def steps_with_ids(self, ids: Iterable[int]) -> list[dict[str, Any]]:
        """For metrics: these step executions (those that exist), as `steps_after`
        reads them."""
        wanted = list(ids)
        if not wanted:
            return []
        rows = self.db.all(self.q.steps_with_ids, {"ids": wanted})
        return [as_mapping(r) for r in rows]

    def _fenced_step(self, rowcount: int, step_exec_id: int) -> None:
        if rowcount != 1:
            raise StaleAttemptError(f"step execution {step_exec_id} belongs to a stale attempt")
