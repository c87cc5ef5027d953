"""Execution records: `workflow_runs` (one per ticket attempt) and `step_executions`
(one per step attempt). Writes are fenced: a run whose attempt no longer holds its
ticket (reclaimed by another engine) cannot be written any more.
"""

from __future__ import annotations

import json
from typing import Any

from swarm_engine.errors import NotFoundError, StaleAttemptError
from swarm_engine.models import Usage
from swarm_engine.store.db import Database
from swarm_engine.store.rows import Ticket, decode_record
from swarm_engine.store.tickets import NOW, TicketStore

HELD = (
    "EXISTS (SELECT 1 FROM workflow_runs r JOIN tickets t ON t.id = r.ticket_id"
    " WHERE r.id = {run} AND t.attempt_id = r.attempt_id)"
)
DURATION = (
    "CAST(round((julianday(strftime('%Y-%m-%dT%H:%M:%fZ','now')) - julianday({start}))"
    " * 86400000) AS INTEGER)"
)


class RunStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.tickets = TicketStore(db)

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
        assert ticket.attempt_id is not None
        with self.db.transaction():
            self.tickets.mark_running(ticket.id, ticket.attempt_id)
            cur = self.db.run(
                "INSERT INTO workflow_runs (ticket_id, attempt, attempt_id, engine_id,"
                " execution_mode, workflow_name, workflow_version, inputs)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ticket.id,
                    ticket.attempts,
                    ticket.attempt_id,
                    engine_id,
                    ticket.execution_mode
                    if ticket.execution_mode in ("single", "workflow")
                    else "single",
                    workflow_name,
                    workflow_version,
                    json.dumps(inputs, default=str),
                ),
            )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def add_step(
        self,
        run_id: int,
        *,
        step_id: str,
        agent_name: str,
        agent_version: str,
        agent_kind: str,
        inputs: dict[str, Any],
        retry_count: int = 0,
        status: str = "queued",
        error: str | None = None,
    ) -> int:
        cur = self.db.run(
            "INSERT INTO step_executions (run_id, step_id, agent_name, agent_version,"
            " agent_kind, inputs, retry_count, status, error, completed_at)"
            f" SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, CASE WHEN ? = 'queued' THEN NULL ELSE {NOW} END"
            f" WHERE {HELD.format(run='?')}",
            (
                run_id,
                step_id,
                agent_name,
                agent_version,
                agent_kind,
                json.dumps(inputs, default=str),
                retry_count,
                status,
                error,
                status,
                run_id,
            ),
        )
        if cur.rowcount != 1 or cur.lastrowid is None:
            raise StaleAttemptError(f"run {run_id} no longer holds its ticket")
        return cur.lastrowid

    def step_started(self, step_exec_id: int, vm_id: str) -> None:
        self._fenced_step(
            f"UPDATE step_executions SET status = 'running', vm_id = ?, started_at = {NOW}"
            " WHERE id = ? AND status = 'queued'",
            (vm_id, step_exec_id),
            step_exec_id,
        )

    def step_finished(
        self,
        step_exec_id: int,
        *,
        status: str,
        outputs: dict[str, Any] | None,
        exit_code: int | None,
        error: str | None,
        usage: Usage,
        log_path: str | None = None,
    ) -> None:
        self._fenced_step(
            f"UPDATE step_executions SET status = ?, outputs = ?, exit_code = ?, error = ?,"
            f" completed_at = {NOW},"
            f" duration_ms = CASE WHEN started_at IS NULL THEN NULL"
            f"   ELSE {DURATION.format(start='started_at')} END,"
            " input_tokens = ?, output_tokens = ?, cache_creation_input_tokens = ?,"
            " cache_read_input_tokens = ?, turns = ?, stop_reason = ?, cost_usd = ?,"
            " log_path = coalesce(?, log_path)"
            " WHERE id = ? AND status IN ('queued','running')",
            (
                status,
                None if outputs is None else json.dumps(outputs, default=str),
                exit_code,
                error,
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_creation_input_tokens,
                usage.cache_read_input_tokens,
                usage.turns,
                usage.stop_reason,
                usage.cost_usd,
                log_path,
                step_exec_id,
            ),
            step_exec_id,
        )

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
    ) -> None:
        """Close the run (usage rolled up from its steps) and the ticket, atomically.

        `ticket_status` defaults to the run status; 'open' re-queues the ticket (a retry).
        A cancelled ticket keeps its status; the run is recorded as cancelled.
        `outputs` becomes the ticket's `result` when done; `workflow_runs.outputs` gets it
        too unless `outputs_in_steps` (it only repeats step rows: stored once, issue 8.5).
        """
        assert ticket.attempt_id is not None
        with self.db.transaction():
            held = self.db.one(
                "SELECT t.status FROM tickets t JOIN workflow_runs r ON r.ticket_id = t.id"
                " WHERE r.id = ? AND t.attempt_id = r.attempt_id",
                (run_id,),
            )
            if held is None:
                raise StaleAttemptError(f"run {run_id} no longer holds its ticket")
            cancelled = held[0] == "cancelled"
            if cancelled:
                status, error = "cancelled", error or "cancelled by user"
            keep = outputs is not None and not outputs_in_steps
            self.db.run(
                "UPDATE workflow_runs SET status = ?, outputs = ?, error = ?,"
                f" completed_at = {NOW}, duration_ms = {DURATION.format(start='started_at')},"
                " input_tokens = s.i, output_tokens = s.o, cache_creation_input_tokens = s.cc,"
                " cache_read_input_tokens = s.cr, cost_usd = s.c"
                " FROM (SELECT coalesce(sum(input_tokens),0) i, coalesce(sum(output_tokens),0) o,"
                "  coalesce(sum(cache_creation_input_tokens),0) cc,"
                "  coalesce(sum(cache_read_input_tokens),0) cr, coalesce(sum(cost_usd),0) c"
                "  FROM step_executions WHERE run_id = ?) s"
                " WHERE workflow_runs.id = ?",
                (
                    status,
                    json.dumps(outputs, default=str) if keep else None,
                    error,
                    run_id,
                    run_id,
                ),
            )
            self.db.run(
                "UPDATE step_executions SET status = 'cancelled', completed_at = "
                f"{NOW} WHERE run_id = ? AND status IN ('queued','running')",
                (run_id,),
            )
            if not cancelled:
                self.tickets.finish(
                    ticket.id,
                    ticket.attempt_id,
                    status=ticket_status or status,
                    result=outputs if status == "done" else None,
                    error=error,
                )

    def abandon_run(self, run_id: int, error: str) -> None:
        """Close a run its own engine stopped because its attempt lost the ticket (and the
        run's unfinished steps). Not fenced: it only closes that run's own rows."""
        with self.db.transaction():
            self.db.run(
                f"UPDATE step_executions SET status = 'failed', error = coalesce(error, ?),"
                f" completed_at = {NOW} WHERE run_id = ? AND status IN ('queued','running')",
                (error, run_id),
            )
            self.db.run(
                f"UPDATE workflow_runs SET status = 'failed', error = coalesce(error, ?),"
                f" completed_at = {NOW}, duration_ms = {DURATION.format(start='started_at')}"
                " WHERE id = ? AND status = 'running'",
                (error, run_id),
            )

    # -- reading ---------------------------------------------------------------------------
    def get_run(self, run_id: int) -> dict[str, Any]:
        row = self.db.one("SELECT * FROM workflow_runs WHERE id = ?", (run_id,))
        if row is None:
            raise NotFoundError(f"run {run_id} does not exist")
        return decode_record(row)

    def runs_for_ticket(self, ticket_id: int) -> list[dict[str, Any]]:
        rows = self.db.all(
            "SELECT * FROM workflow_runs WHERE ticket_id = ? ORDER BY id", (ticket_id,)
        )
        return [decode_record(r) for r in rows]

    def runs_for_workflow(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.db.all(
            "SELECT * FROM workflow_runs WHERE workflow_name = ? ORDER BY id DESC LIMIT ?",
            (name, limit),
        )
        return [decode_record(r) for r in rows]

    def recent_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        # unisolated_steps (issue 9): steps of the run whose VM had no isolation
        rows = self.db.all(
            "SELECT r.*, (SELECT count(*) FROM step_executions s JOIN vms v ON v.id = s.vm_id"
            " WHERE s.run_id = r.id AND v.isolation = 'none') AS unisolated_steps"
            " FROM workflow_runs r ORDER BY r.id DESC LIMIT ?",
            (limit,),
        )
        return [decode_record(r) for r in rows]

    def usage_totals(self) -> dict[str, Any]:
        """API usage summed over every run: the four token counts and `cost_usd`."""
        row = self.db.one(
            "SELECT coalesce(sum(input_tokens),0) input_tokens,"
            " coalesce(sum(output_tokens),0) output_tokens,"
            " coalesce(sum(cache_creation_input_tokens),0) cache_creation_input_tokens,"
            " coalesce(sum(cache_read_input_tokens),0) cache_read_input_tokens,"
            " coalesce(sum(cost_usd),0) cost_usd FROM workflow_runs"
        )
        return decode_record(row) if row is not None else {}

    def steps(self, run_id: int) -> list[dict[str, Any]]:
        # vm_backend, vm_isolation (issue 9): what the step's VM was and what isolated it
        rows = self.db.all(
            "SELECT s.*, v.backend AS vm_backend, v.isolation AS vm_isolation"
            " FROM step_executions s LEFT JOIN vms v ON v.id = s.vm_id"
            " WHERE s.run_id = ? ORDER BY s.id",
            (run_id,),
        )
        return [decode_record(r) for r in rows]

    def _fenced_step(self, sql: str, args: tuple[Any, ...], step_exec_id: int) -> None:
        guard = (
            " AND EXISTS (SELECT 1 FROM workflow_runs r JOIN tickets t ON t.id = r.ticket_id"
            " WHERE r.id = step_executions.run_id AND t.attempt_id = r.attempt_id)"
        )
        if self.db.run(sql + guard, args).rowcount != 1:
            raise StaleAttemptError(f"step execution {step_exec_id} belongs to a stale attempt")
