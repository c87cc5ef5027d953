"""One attempt of one step: its artifacts folder, its live log, its VM, its recorded end.

`StepAttempt.run` is called by the ticket runner (`engine/runner.py`) for each attempt of
each step, after the attempt's `step_executions` row was written (`queued`). It opens the
artifacts folder and `output.log` off the event loop, prepares the agent's tools and model
API gateway, takes a fresh VM from the pool (recorded ready and the step running in one
write), runs the agent in it under the step's timeout, and records the end: the rest of
the live log, the VM destroyed (at the time it went) and the step's row, in one
transaction. The end of a run's only step, when it succeeded, is not written here but
handed back for the run's end to write with its own (see `RunWrites.close_run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import ChainMap
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from swarm_engine.agents.base import StepContext, StepOutcome
from swarm_engine.agents.kinds import get_agent
from swarm_engine.engine.bounds import stored_outputs
from swarm_engine.engine.events import Event
from swarm_engine.engine.gate import StoreGate
from swarm_engine.engine.loglines import LogLines
from swarm_engine.engine.logship import LogShipper
from swarm_engine.engine.model_api import StepModelApi
from swarm_engine.engine.plan import PlannedStep, ticket_fields
from swarm_engine.engine.steplog import DEFERRED, StepLog
from swarm_engine.engine.writes import Destroyed, RunWrites, StepEnd
from swarm_engine.errors import (
    AgentError,
    StaleAttemptError,
    StoreBusyError,
    StoreError,
    SwarmError,
    VMError,
)
from swarm_engine.models import Usage
from swarm_engine.records import JsonText, stored_text
from swarm_engine.store import Ticket
from swarm_engine.vm import shortage
from swarm_engine.vm.base import VM, VMSpec
from swarm_engine.vm.pool import spec_for

if TYPE_CHECKING:
    from swarm_engine.engine.runner import TicketRunner

log = logging.getLogger(__name__)

TIMEOUT_GRACE = 5.0
"""Seconds past a step's timeout before its agent is stopped from the host side."""
REOPEN_SECONDS = 10.0
"""At most this long, at a step's end, a log parked for a shortage of fds waits for its file."""


class StepAttempt:
    """One attempt of `step` (row `exec_id`, rendered `inputs`, `inputs_json` their JSON
    as the row holds it) of run `run_id`.

    `on_held`, given for the run's only step: its successful end is handed to it (at
    once, before anything else is awaited) for the run's end to write. After `run`,
    `outputs_json` holds the outputs as their row holds them (None: none were stored)."""

    def __init__(
        self,
        runner: TicketRunner,
        step: PlannedStep,
        exec_id: int,
        inputs: Any,
        ticket: Ticket,
        run_id: int,
        attempt: int,
        *,
        on_held: Callable[[StepEnd], None] | None = None,
        inputs_json: JsonText | None = None,
    ) -> None:
        self.runner = runner
        self.step = step
        self.exec_id = exec_id
        self.inputs = inputs
        self.ticket = ticket
        self.run_id = run_id
        self.on_held = on_held
        self.inputs_json = inputs_json
        self.outputs_json: JsonText | None = None
        self.folder = runner.settings.artifacts_dir / f"run-{run_id}" / f"{step.id}.{attempt + 1}"
        self.destroyed: list[Destroyed] = []
        """VMs gone but not yet recorded destroyed."""
        self.started = False
        """Whether its VM was ready and its start being recorded (`_on_ready`): a step
        cancelled before that never started."""
        self.sink: StepLog | None = None
        self.opening: asyncio.Future[BinaryIO | OSError] | None = None

    async def run(self) -> StepOutcome:
        """Run the attempt to its end (recorded, or held) and return its outcome."""
        runner, step = self.runner, self.step
        spec = spec_for(
            step.agent.vm.model_dump(),
            step.agent.memory_mb,
            step.agent.vcpus,
            step.timeout_seconds,
            output_keep_bytes=runner.settings.output_keep_bytes,  # bounded output (issue 8.5)
        )
        # the folder and its log file, off the event loop (on a busy disk a mkdir can take
        # milliseconds) and while the VM boots; on a full disk the step runs, its log file
        # is not written
        opening = asyncio.ensure_future(
            asyncio.to_thread(StepLog.open_log, self.folder / "output.log")
        )

        budget = runner.budget(self.run_id)

        async def append(text: str) -> object:
            stored = budget.log_chunk(text, self.step.id)  # (a run's logs count: RunBudget)
            if not stored:
                return None
            return await runner.write(self.ticket, runner.store.logs.append, self.exec_id, stored)

        shipper = LogShipper(append)  # the live copy in the store (issue 13)
        try:
            async with shipper:
                return await self._in_vm(spec, shipper, opening)
        finally:  # VMs not recorded with the step's end (cancelled, lost, crashed)
            kept = self.folder / "output.log"
            note = shipper.cut_note(str(kept))
            if note is not None:  # stopped, its rest not stored: said with the run's end
                runner.log_cut(self.run_id, self.exec_id, note)
                log.warning(
                    "step %s of run %s: stopped while the store was busy; the rest of its"
                    " log is not stored, only in %s",
                    self.step.id,
                    self.run_id,
                    kept,
                )
            if self.sink is None:  # cancelled before the log was made: its file is closed
                opening.add_done_callback(_close_unused)
            await record_destroyed(runner.gate, runner.writes, self.destroyed)

    async def _attach(self, sink: StepLog, opening: asyncio.Future[BinaryIO | OSError]) -> None:
        """Give the step's log its file once it is open (before the agent runs)."""
        if not sink.deferred:
            return
        try:
            opened = await asyncio.shield(opening)
        except asyncio.CancelledError:  # the file is closed (and the log's end written) later
            opening.add_done_callback(lambda job: _attach_later(sink, job))
            raise
        if isinstance(opened, OSError):
            log.warning(
                "step %s of run %s: no artifacts folder: %s", self.step.id, self.run_id, opened
            )
        sink.attach(opened)

    async def _on_ready(self, vm: VM) -> None:
        runner = self.runner
        self.started = True  # (from the write's start: a cancel may cut it short, stored)
        assert self.sink is not None and self.opening is not None
        await self._attach(self.sink, self.opening)  # the artifacts folder is there now
        await runner.write(self.ticket, runner.writes.step_started, self.exec_id, vm)
        runner.events(
            Event("step_started", self.ticket.id, self.run_id, self.step.id, {"vm_id": vm.id})
        )

    def _on_destroyed(self, vm_id: str, error: str | None) -> None:
        self.destroyed.append((vm_id, error, datetime.now(UTC)))  # recorded with the end

    async def _in_vm(
        self, spec: VMSpec, shipper: LogShipper, opening: asyncio.Future[BinaryIO | OSError]
    ) -> StepOutcome:
        logfile = self.folder / "output.log"
        sink = StepLog(logfile, self.runner.settings.max_log_bytes, shipper.feed, DEFERRED)
        self.sink, self.opening = sink, opening
        lines = LogLines(sink.write)
        try:
            # while the step waits out a shortage of the host its log holds no descriptor
            with shortage.releasing(sink.park):
                outcome = await self._step(spec, sink, lines, logfile)
        finally:
            lines.close()
            try:  # the log's file, if no VM came up to wait for it
                await self._attach(sink, opening)
                await self._unpark(sink)
            finally:
                sink.close()
        return await self._end(outcome, shipper, logfile)

    async def _unpark(self, sink: StepLog) -> None:
        """A log parked for a shortage gets its file back before it is closed, waiting
        out the shortage up to `REOPEN_SECONDS` (the step is over: its ticket's slot is not
        held longer for its log's file); then, or on a cancel, the file keeps what it has
        and the live copy in the store has it all."""
        if not sink.parked:
            return

        async def reopen() -> None:
            sink.reopen()

        with contextlib.suppress(VMError):
            await shortage.patiently(
                reopen, deadline=time.monotonic() + min(self.step.timeout_seconds, REOPEN_SECONDS),
                doing=f"reopen {sink.path}", vm_id="",
            )  # fmt: skip

    async def _step(
        self, spec: VMSpec, sink: StepLog, lines: LogLines, logfile: Path
    ) -> StepOutcome:
        """The agent in its VM, under its timeout: its outcome (a cancel is recorded and
        raised)."""
        runner, step, ticket, run_id = self.runner, self.step, self.ticket, self.run_id

        def on_log(stream: str, text: str) -> None:
            lines.feed(stream, text)  # each stream's bytes as they came, stderr prefixed
            sink.flush()
            runner.events(
                Event(
                    "step_output",
                    ticket.id,
                    run_id,
                    step.id,
                    {"stream": stream, "text": text},
                )
            )

        api: StepModelApi | None = None
        try:
            agent = get_agent(step.agent.kind, runner.settings.agents.get(step.agent.kind))
            api = StepModelApi(
                runner.settings,
                agent,
                step.agent,
                artifacts_dir=self.folder,
                log=on_log,
                environ=ChainMap(runner.host_env, os.environ),  # read, not copied
            )
            async with api:  # its tools and model API gateway, if it has any (issue 14)
                spec = await api.vm_spec(spec)
                async with runner.pool.acquire(
                    spec, step.agent.vm.backend, self._on_ready, self._on_destroyed
                ) as vm:
                    ctx = StepContext(
                        vm=vm,
                        agent=step.agent,
                        inputs=self.inputs,
                        ticket=ticket_fields(ticket),
                        step_id=step.id,
                        run_id=run_id,
                        artifacts_dir=self.folder,
                        timeout_seconds=step.timeout_seconds,
                        packages_dir=runner.settings.packages_dir,
                        package=runner.package(ticket, step.agent),
                        log=on_log,
                        host_env=runner.host_env,
                        model_api=api.bind(vm),
                        inputs_json=(
                            self.inputs_json.text
                            if self.inputs_json is not None and isinstance(self.inputs, dict)
                            else None
                        ),
                        on_usage=api.report,
                    )
                    try:
                        async with asyncio.timeout(step.timeout_seconds + TIMEOUT_GRACE):
                            outcome = await api.run(ctx)
                    except TimeoutError:
                        outcome = StepOutcome(
                            exit_code=124,
                            error=f"timed out after {step.timeout_seconds:g}s; VM destroyed",
                        )
            outcome = api.settle(outcome)  # the usage the gateway counted
        except asyncio.CancelledError:
            # stopped from outside: the row keeps the usage billed so far (its gateway's
            # count, else the agent's), in the write that records the step's end
            end = StepEnd(
                self.exec_id,
                [],
                None,
                status="cancelled",
                outputs=None,
                exit_code=None,
                error="cancelled",
                usage=Usage() if api is None else api.so_far(),
                log_path=str(logfile),
            )
            if runner.stopping:  # the engine's abort: recorded with the run's, in one write
                runner.aborted_step(run_id, self.destroyed, end if self.started else None)
                raise
            # first, as patiently as ever
            await record_destroyed(runner.gate, runner.writes, self.destroyed)
            if not self.started:  # left queued: the run's end records it skipped, saying
                raise  # why the run ended (`RunStore.finish_run`)
            with contextlib.suppress(StaleAttemptError, StoreBusyError):
                await runner.gate(
                    runner.store.runs.step_finished,
                    self.exec_id,
                    status=end.status,
                    outputs=None,
                    exit_code=None,
                    error=end.error,
                    usage=end.usage,
                    log_path=end.log_path,
                )
            raise
        except StaleAttemptError:
            raise
        except SwarmError as exc:
            outcome = StepOutcome(error=str(exc))
        except Exception as exc:
            log.exception("step %s of run %s crashed", step.id, run_id)
            outcome = StepOutcome(error=f"internal error: {type(exc).__name__}: {exc}")
        return outcome

    async def _end(self, outcome: StepOutcome, shipper: LogShipper, logfile: Path) -> StepOutcome:
        """Record the end (or hand it to `on_held`), with every VM recorded destroyed.
        Outputs over `bounds.STEP_OUTPUTS_BYTES` are not stored (nor seen by any later
        step): the step fails with one line (after its own error, if it failed)."""
        runner, ticket = self.runner, self.ticket
        rest = await shipper.take_rest()  # (the whole log passed the budget)
        if rest:
            rest = runner.budget(self.run_id).log_chunk(rest, self.step.id) or None
        outcome = self._bounded(outcome)
        gone = [*self.destroyed]
        end = StepEnd(
            self.exec_id,
            gone,
            rest,
            status="done" if outcome.ok else "failed",
            outputs=self.outputs_json,
            exit_code=outcome.exit_code,
            error=outcome.error,
            usage=outcome.usage,
            log_path=str(logfile),
            event=Event(
                "step_finished",
                ticket.id,
                self.run_id,
                self.step.id,
                {"ok": outcome.ok, "error": outcome.error, "outputs": outcome.outputs},
            ),
        )
        if self.on_held is not None and outcome.ok:
            self.on_held(end)  # written with the run's end, outside the ticket's timeout
            del self.destroyed[: len(gone)]  # as the run's end always was
            return outcome
        await runner.write(ticket, runner.writes.step_finished, end)
        del self.destroyed[: len(gone)]
        assert end.event is not None
        runner.events(end.event)
        return outcome

    def _bounded(self, outcome: StepOutcome) -> StepOutcome:
        """`outcome` as stored (`records.stored_text`, `bounds.stored_outputs`: each NUL
        in its error, its outputs and its usage's `stop_reason` as U+FFFD) with its outputs measured (`outputs_json`
        set); over their cap or
        what the run may still store (`bounds.RunBudget`), the outcome failed with one
        line, its outputs dropped (never stored nor passed on)."""
        error = None if outcome.error is None else stored_text(outcome.error)
        usage = outcome.usage
        if usage.stop_reason is not None and "\x00" in usage.stop_reason:  # (the VM's text)
            usage = replace(usage, stop_reason=stored_text(usage.stop_reason))
        try:
            outputs, self.outputs_json = stored_outputs(outcome.outputs)
            self.runner.budget(self.run_id).charge(self.outputs_json, "outputs: ")
        except AgentError as exc:
            self.outputs_json = None
            error = str(exc) if error is None else f"{error}; {exc}"
            return StepOutcome(outputs={}, exit_code=outcome.exit_code, error=error, usage=usage)
        if outputs is outcome.outputs and error == outcome.error and usage is outcome.usage:
            return outcome
        return StepOutcome(outputs=outputs, exit_code=outcome.exit_code, error=error, usage=usage)


async def record_destroyed(gate: StoreGate, writes: RunWrites, destroyed: list[Destroyed]) -> None:
    """Record these VMs destroyed now (emptying `destroyed`), waiting for a busy store but
    never for a lease; a store that fails otherwise leaves them to the reaper."""
    gone = [*destroyed]
    if not gone:
        return
    del destroyed[: len(gone)]
    job = asyncio.ensure_future(gate.retrying(writes.vms_destroyed, gone))
    job.add_done_callback(_seen)  # (shielded: its error is the reaper's, never a traceback)
    with contextlib.suppress(StoreError):
        await asyncio.shield(job)


def _seen(job: asyncio.Future[None]) -> None:
    """Take a shielded write's outcome, so that one ending in an error after its waiter
    was cancelled (a store given up) is not reported `Task exception was never
    retrieved`, with a traceback."""
    if not job.cancelled():
        job.exception()


def _attach_later(sink: StepLog, job: asyncio.Future[BinaryIO | OSError]) -> None:
    if not job.cancelled() and job.exception() is None:
        sink.attach(job.result())


def _close_unused(job: asyncio.Future[BinaryIO | OSError]) -> None:
    if not job.cancelled() and job.exception() is None:
        opened = job.result()
        if not isinstance(opened, OSError):
            opened.close()
