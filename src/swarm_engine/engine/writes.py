"""The runner's writes that span several store calls, each one transaction.

These run on the store thread (through `StoreGate`), never on the event loop. Each is
all or nothing: a stale attempt's fenced write is refused, and then so is the rest of
its transaction (a VM of a refused step's end is recorded destroyed apart, by the
runner, waiting for a busy store but never for a lease).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from swarm_engine.engine.enginerow import EngineRow
from swarm_engine.engine.events import Event
from swarm_engine.engine.gate import store_said
from swarm_engine.engine.leases import refused
from swarm_engine.errors import NotFoundError, StoreError, StoreIntegrityError
from swarm_engine.models import Usage
from swarm_engine.records import JsonText, stored_text
from swarm_engine.store import Store, Ticket
from swarm_engine.store.runs import SkippedStep
from swarm_engine.vm.base import VM

Destroyed = tuple[str, str | None, datetime]
"""A VM gone, to be recorded: its id, the error its destruction hit (None: clean), and
when (UTC; the record may be written later, with the step's or the run's end)."""

IGNORED_CLOSE = "the store ignored the run's close without an error (a trigger's RAISE(IGNORE)?)"
"""What a close of a run the store dropped says (`RunWrites.close_run`)."""

Fate = Literal["failed", "unrecorded", "deleted", "taken"]
"""What became of a ticket after a fenced write of its attempt was refused (see
`RunWrites.refused`)."""


@dataclass
class NewStep:
    """A `step_executions` row to add (see `RunStore.add_step`)."""

    step_id: str
    agent_name: str
    agent_version: str
    agent_kind: str
    inputs: JsonText
    """Its rendered inputs as the row holds them (`bounds.step_inputs_json`)."""


@dataclass
class StepEnd:
    """A step attempt's end: the rest of its live log, its VMs destroyed and its row; and
    the event to emit once it is stored."""

    exec_id: int
    destroyed: list[Destroyed]
    log_rest: str | None
    status: str
    outputs: JsonText | None
    """As the row holds them (`bounds.step_outputs_json`); None: no outputs stored."""
    exit_code: int | None
    error: str | None
    usage: Usage
    log_path: str
    event: Event | None = field(default=None, compare=False)


class RunWrites:
    def __init__(self, store: Store, engine_row: EngineRow | None = None) -> None:
        self.store = store
        self.engine_row = engine_row
        """The engine's own row, which a run names: put back if a run's start is refused
        because another writer deleted it (`EngineRow.keeping`)."""

    def start_run(
        self,
        ticket: Ticket,
        *,
        engine_id: str,
        workflow_name: str | None,
        workflow_version: str | None,
        first: NewStep | None,
    ) -> tuple[int, int | None]:
        """The run (the ticket `running`) and, if given, its first step's row (`queued`),
        in one transaction: `(run_id, step_execution_id or None)`. Refused because the
        engine's row is gone (the run names it), the row is put back and the start made
        again, in the same call."""

        def started() -> tuple[int, int | None]:  # only store calls (store/rerun.py)
            runs = self.store.runs
            run_id = runs.start_run(
                ticket,
                engine_id=engine_id,
                workflow_name=workflow_name,
                workflow_version=workflow_version,
                inputs=ticket.inputs,
            )
            if first is None:
                return run_id, None
            exec_id = runs.add_step(
                run_id,
                step_id=first.step_id,
                agent_name=first.agent_name,
                agent_version=first.agent_version,
                agent_kind=first.agent_kind,
                inputs=first.inputs,
            )
            return run_id, exec_id

        def start() -> tuple[int, int | None]:
            return self.store.atomic(started)

        return start() if self.engine_row is None else self.engine_row.keeping(start)

    def step_started(self, exec_id: int, vm: VM) -> None:
        """The VM is up: recorded ready and busy with the step, and the step running."""
        info = vm.info()

        def started() -> None:  # only SQL: run again if rolled back (store/rerun.py)
            self.store.vms.record_ready(
                vm.id,
                pid=info.pid,
                workspace=info.workspace,
                socket_path=info.socket_path,
                overlay_path=info.overlay_path,
                isolation=info.isolation,
                busy_with=exec_id,
            )
            self.store.runs.step_started(exec_id, vm.id)

        self.store.atomic(started)

    def step_finished(self, end: StepEnd) -> None:
        """The step is over: the rest of its live log, its VMs destroyed and its end."""

        def finished() -> None:  # only SQL: run again if rolled back (store/rerun.py)
            if end.log_rest:
                self.store.logs.append(end.exec_id, end.log_rest)
            self.vms_destroyed(end.destroyed)
            self.store.runs.step_finished(
                end.exec_id,
                status=end.status,
                outputs=end.outputs,
                exit_code=end.exit_code,
                error=end.error,
                usage=end.usage,
                log_path=end.log_path,
            )

        self.store.atomic(finished)

    def close_run(
        self,
        run_id: int,
        ticket: Ticket,
        *,
        status: str,
        outputs: Any = None,
        error: str | None = None,
        outputs_in_steps: bool = False,
        ticket_status: str | None = None,
        step_end: StepEnd | None = None,
        destroyed: list[Destroyed] | None = None,
        stopped: Sequence[StepEnd] = (),
        skipped: Sequence[SkippedStep] = (),
        why: str | None = None,
        log_notes: Sequence[tuple[int, str]] = (),
    ) -> tuple[Ticket, dict[str, Any]]:
        """The run's end (`RunStore.finish_run`), after the end of its last step if that
        was held back for it (`step_end`), the VMs of its steps that are gone but not
        yet recorded (`destroyed`: an abort's), the ends of its steps an abort stopped
        (`stopped`: `cancelled`, with their usage so far) and the rows of its steps that never
        started (`skipped`, and those queued: `not run: WHY`), the lines that end the stored
        logs of its steps stopped while the store was busy (`log_notes`: `(step execution
        id, line)`, `TicketRunner.log_cut`), then the final ticket and run rows read back. A
        run still `running` after its close (the store dropped the write without an
        error) undoes it all: `StoreIntegrityError`, a refused write of the run's end."""

        def close() -> tuple[Ticket, dict[str, Any]]:  # only SQL: run again (store/rerun.py)
            if step_end is not None:
                self.step_finished(step_end)
            for end in stopped:
                self.step_finished(end)
            for exec_id, note in log_notes:  # (after what the step's end stored)
                self.store.logs.append(exec_id, note)
            self.vms_destroyed(destroyed or [])
            self.store.runs.finish_run(
                run_id,
                ticket,
                status=status,
                outputs=outputs,
                error=None if error is None else stored_text(error),  # (a step's error in it)
                ticket_status=ticket_status,
                outputs_in_steps=outputs_in_steps,
                skipped=skipped,
                why=None if why is None else stored_text(why),
            )
            run = self.store.runs.get_run(run_id)
            if run.get("status") == "running":  # the close dropped (a trigger's IGNORE):
                raise StoreIntegrityError(IGNORED_CLOSE)  # undone, a refused run's end
            return self.store.tickets.get(ticket.id), run

        return self.store.atomic(close)

    def refused(self, ticket: Ticket, error: str) -> Fate:
        """After a fenced write of this attempt was refused: fail the ticket with `error`
        (one line; its open runs and steps closed) if the attempt still holds it, for then
        the refusal came from a row of this attempt another writer changed, or from inside
        the write itself (a trigger that deleted or changed the ticket, undone with it):
        'failed'. Else 'deleted' (the row is gone) or 'taken' (cancelled, reclaimed, or
        given another attempt: what the lease keeper sees and handles).

        When the store refuses to fail the ticket too (a trigger that refuses 'failed' as
        well, or any change of the row), by raising or by silently ignoring the write, the
        attempt's run is closed as ended unrecorded (`RunStore.end_unrecorded`):
        'unrecorded'. The ticket stays as the store keeps it, and is never run again."""
        attempt_id = ticket.attempt_id
        assert attempt_id is not None
        try:
            if self.store.tickets.fail_attempt(ticket.id, attempt_id, error):
                return "failed"
        except StoreError as exc:
            if not refused(exc):  # busy, its file gone: the caller's to handle
                raise
            why = f"{error}; failing the ticket was refused too ({store_said(exc)})"
            return self._unrecorded(ticket, why, exc)
        try:
            self.store.tickets.get(ticket.id)
        except NotFoundError:
            return "deleted"
        if self.store.tickets.still_held(ticket.id, attempt_id):  # the failing was ignored
            why = f"{error}; failing the ticket was ignored by the store (a trigger?)"
            return self._unrecorded(ticket, why, None)
        return "taken"

    def _unrecorded(self, ticket: Ticket, why: str, exc: StoreError | None) -> Fate:
        """Close the attempt's run as ended unrecorded (`RunStore.end_unrecorded`); if
        the store keeps even that from being written, the failing's refusal is raised as
        it came: the lease's end settles the ticket, as before."""
        if self.store.runs.end_unrecorded(ticket, why):
            return "unrecorded"
        if exc is not None:
            raise exc
        return "taken"

    def vms_destroyed(self, destroyed: list[Destroyed]) -> None:
        for vm_id, error, at in destroyed:
            self.store.vms.record_destroyed(vm_id, error, at)
