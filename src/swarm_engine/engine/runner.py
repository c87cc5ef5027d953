"""Running one claimed ticket: its run started, its plan executed as a DAG of steps, each
in a fresh VM (`engine/dag.py`), and its end recorded.

Every step attempt is a `step_executions` row; the run and the ticket are closed
together. A watcher renews the ticket's lease
and stops the run within a fraction of a second if the ticket is cancelled or was
reclaimed by another engine (then every write of this attempt is refused anyway).

Every store call goes through the engine's `StoreGate` (off the event loop) and is
retried while the store is busy, for as long as the `LeaseKeeper` says the attempt's
lease is held: a locked database delays a run, it never aborts one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from swarm_engine.config import Settings
from swarm_engine.engine.attempt import record_destroyed
from swarm_engine.engine.bounds import RunBudget
from swarm_engine.engine.closing import close_left, taken_back, to_the_end, unfenced
from swarm_engine.engine.dag import Queued, RunFailed, StepFailed, execute, not_run
from swarm_engine.engine.enginerow import EngineRow
from swarm_engine.engine.events import Event, EventSink, guarded, ignore
from swarm_engine.engine.gate import StoreGate
from swarm_engine.engine.leases import LeaseKeeper, LostReason
from swarm_engine.engine.opening import Started, only_step, started_from
from swarm_engine.engine.packages import RunPackages, hold_for
from swarm_engine.engine.plan import (
    Plan,
    run_context,
)
from swarm_engine.engine.refusals import Refusals
from swarm_engine.engine.writes import Destroyed, NewStep, RunWrites, StepEnd
from swarm_engine.errors import (
    AttemptEndedError,
    EngineRowLostError,
    StaleAttemptError,
    StoreBusyError,
    StoreError,
    StoreGoneError,
    StoreIntegrityError,
    SwarmError,
    TicketDeletedError,
)
from swarm_engine.models import AgentSpec
from swarm_engine.package_folders import HeldCopy
from swarm_engine.records import NAME_RE, VERSION_RE
from swarm_engine.schema_check import SchemaChecker
from swarm_engine.store import Store, Ticket
from swarm_engine.store.runs import SkippedStep
from swarm_engine.store.tickets import REOPENED
from swarm_engine.vm import shortage
from swarm_engine.vm.pool import VMPool

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class TicketRunner(Refusals):
    """Runs one ticket that this engine has claimed (`ticket.attempt_id` is ours). How a
    write of its run that the store refuses ends the attempt: `engine/refusals.py`."""

    def __init__(
        self,
        *,
        store: Store,
        gate: StoreGate,
        keeper: LeaseKeeper,
        pool: VMPool,
        settings: Settings,
        engine_id: str,
        events: EventSink = ignore,
        checker: SchemaChecker | None = None,
        engine_row: EngineRow | None = None,
    ) -> None:
        self.store = store
        self.gate = gate
        self.keeper = keeper
        self.pool = pool
        self.settings = settings
        self.engine_id = engine_id
        self.events = guarded(events)
        self.writes = RunWrites(store, engine_row)
        self.checker = checker or SchemaChecker()
        """Checks steps' inputs against their agents' schemas; its owner closes it."""
        self.host_env: dict[str, str] = {}
        self._closed: dict[int, tuple[Ticket, dict[str, Any]]] = {}
        """Runs this runner closed, with their final ticket and run rows (see `_close`)."""
        self._budgets: dict[int, RunBudget] = {}
        """What each run of this runner has stored in its steps' rows (`budget`)."""
        self._held: dict[int, StepEnd] = {}
        """The end of a run's only step, held back to be written with the run's end."""
        self._rowed: dict[int, tuple[Plan, set[str]]] = {}
        """Each running run's plan and the steps that have a row: the others are recorded
        never run (`dag.not_run`) with a run's end that is not `done`."""
        self._stops: dict[str, tuple[asyncio.Task[Any], Callable[[LostReason], None]]] = {}
        """Each running attempt's main task and how to stop it (see `run`)."""
        self._ended: dict[str, AttemptEndedError] = {}
        self._ending: dict[str, asyncio.Future[StaleAttemptError]] = {}
        """Attempts a refused write ended (see `_refused`), with why."""
        self._aborted: set[int] = set()
        """Tickets whose run's abort was recorded, or tried (see `_abort`)."""
        self.abort_status = "failed"
        """Ticket status when the engine itself is stopped mid-run: 'failed' for
        `run-ticket --wait` (the user stopped it), 'open' for the daemon (re-queued)."""
        self.abort_error = "aborted: the engine was stopped during the run"
        """The aborted run's error (and the ticket's, when it is failed); `{id}`: its id."""
        self.stopping = False
        """The engine itself is stopping its runs (`EngineSession.abort`): a cancel of a
        run now is an abort, whose records a lost lease no longer cuts short."""
        self.unrecorded: dict[int, None] = {}
        """Tickets (in order) whose abort could not be recorded before their leases were
        given up: still `claimed`/`running` in the store until the lease reclaim."""
        self.recorded_aborts: set[int] = set()
        """Tickets whose abort was recorded (`abort_status`)."""
        self.closed_attempts: set[str] = set()
        """Attempts whose run this runner closed itself (`_close`): the ticket's final
        status is this attempt's doing. The daemon takes its own out (`ended_here`)."""
        self.abort_refused: dict[int, str] = {}
        """Tickets whose abort the store refused (a constraint, a trigger), with why."""
        self._aborting: dict[int, list[Destroyed]] = {}
        """VMs of an aborted run's steps, to be recorded destroyed with the run's abort."""
        self._stopped: dict[int, list[StepEnd]] = {}
        self._log_notes: dict[int, list[tuple[int, str]]] = {}
        """Lines to end the stored logs of a run's stopped steps with (`log_cut`), stored
        with the run's end."""
        """Ends (`cancelled`, with their usage so far) of an aborted run's running steps,
        recorded with the run's abort."""
        self.on_row_lost: Callable[[str], None] = lambda why: None
        """Told (with why) when a run's start finds this engine's row gone for good
        (`EngineRowLostError`): the daemon stops."""
        self._refusals: set[asyncio.Task[None]] = set()
        """Attempts being ended because the store refused their lease renewal."""
        self._packages: dict[str, RunPackages] = {}
        """The package copies each running attempt's run was planned with (`package`)."""

    def package(self, ticket: Ticket, agent: AgentSpec) -> HeldCopy | None:
        """The copy of `agent`'s package `ticket`'s run holds (`engine/packages.py`)."""
        held = self._packages.get(str(ticket.attempt_id))
        return None if held is None else held.of(agent)

    async def write(self, ticket: Ticket, fn: Callable[P, T], *args: P.args, **kw: P.kwargs) -> T:
        """A store call for this attempt: retried while the store is busy and the lease is
        held; once the lease has run out, `StaleAttemptError`."""
        attempt = str(ticket.attempt_id)
        if fn == self.writes.close_run:  # the attempt's own end, not a lost ticket
            self.keeper.finishing(attempt)
        try:
            return await self.gate.retrying_while(
                lambda: self.keeper.holds(attempt), fn, *args, **kw
            )
        except StoreBusyError as exc:
            raise StaleAttemptError(
                f"ticket {ticket.id}: the lease ran out while the store was busy ({exc})"
            ) from exc
        except EngineRowLostError as exc:  # (its run's start): not the ticket's doing
            raise await self._left(ticket, exc) from exc
        except (StaleAttemptError, StoreIntegrityError) as exc:
            name = getattr(getattr(fn, "func", fn), "__name__", "")  # (a partial's too)
            raise await self._refused(ticket, name, exc) from exc
        except StoreGoneError:
            raise
        except StoreError as exc:  # any other error of a write: a trigger's own (a JSON
            name = getattr(getattr(fn, "func", fn), "__name__", "")  # path error): refused
            refused = StoreIntegrityError(str(exc))
            raise await self._refused(ticket, name, refused) from exc

    def start_now(self, ticket: Ticket, plan: Plan | SwarmError) -> Started | None:
        """(On the store thread, in the hand-off that claimed `ticket`.) Start its run as
        `run` would, in one transaction; the daemon saves a hand-off per ticket this way.
        None when that failed for any reason (a busy store, a row that does not render):
        `run` then starts it as ever, waiting for the store or failing as it does."""
        try:
            context, first, start = self._opening(ticket, plan)
            return started_from(start(), context, first)
        except Exception as exc:
            log.debug("ticket %s: its run is started apart: %s", ticket.id, exc)
            return None

    def _opening(
        self, ticket: Ticket, plan: Plan | SwarmError
    ) -> tuple[dict[str, Any], tuple[NewStep, Any] | None, Callable[[], tuple[int, int | None]]]:
        """The run's context, its only step (row, inputs) if it has one, and its start."""
        context = {} if isinstance(plan, SwarmError) else run_context(plan, ticket)
        limit = self.settings.max_run_stored_bytes
        first = None if isinstance(plan, SwarmError) else only_step(plan, context, limit)
        name, version = (
            named_workflow(ticket) if isinstance(plan, SwarmError) else (plan.name, plan.version)
        )
        start = functools.partial(
            self.writes.start_run,
            ticket,
            engine_id=self.engine_id,
            workflow_name=name,
            workflow_version=version,
            first=None if first is None else first[0],
        )
        return context, first, start

    async def run(
        self,
        ticket: Ticket,
        plan: Plan | SwarmError,
        steps_over: Callable[[], None] | None = None,
        started: Started | None = None,
    ) -> Ticket:
        """Run the ticket to the end and return its final row. `plan` may be the error
        that resolving it raised: the run is then recorded as failed with that error.
        `steps_over`, if given, is called once no step of the run will boot a VM any more
        (every VM of the run is destroyed); what is left is recording the run's end.
        `started`: the run as `start_now` started it, if it did."""
        assert ticket.attempt_id is not None
        main = asyncio.current_task()
        assert main is not None
        stop_reason: list[LostReason] = []

        def on_lost(reason: LostReason) -> None:
            if stop_reason:  # stopped once already
                return
            if self.stopping and main.cancelling():  # aborted already: a second cancel
                return  # would only cut its records short (their writes see the lease)
            stop_reason.append(reason)
            main.cancel()

        self.keeper.hold(
            ticket.id, ticket.attempt_id, on_lost, functools.partial(self.renewal_refused, ticket)
        )
        self._stops[ticket.attempt_id] = (main, on_lost)
        crash: Exception | None = None
        attempt = ticket.attempt_id
        try:
            if not isinstance(plan, SwarmError):  # its steps' packages, until the run ends
                self._packages[attempt] = await hold_for(plan, self.settings.packages_dir)
            return await self._run(ticket, plan, main, stop_reason, steps_over or _nothing, started)
        except asyncio.CancelledError:
            if self.stopping and not stop_reason and ticket.id not in self._aborted:
                self.left_claimed(ticket)  # stopped before its run could record the abort
            raise
        except Exception as exc:
            crash = None if isinstance(exc, SwarmError) else exc
            raise
        finally:
            self._packages.pop(attempt, RunPackages()).release()
            self.keeper.release(ticket.attempt_id)
            self._stops.pop(ticket.attempt_id, None)
            self._ended.pop(ticket.attempt_id, None)
            await self._close_left(ticket, crash)

    async def _run(
        self,
        ticket: Ticket,
        plan: Plan | SwarmError,
        main: asyncio.Task[Any],
        stop_reason: list[LostReason],
        steps_over: Callable[[], None],
        started: Started | None,
    ) -> Ticket:
        if started is None:
            started = await self._start(ticket, plan)
        run_id, context = started.run_id, started.context
        self.events(Event("run_started", ticket.id, run_id))
        if isinstance(plan, SwarmError):
            steps_over()
            await self._close(ticket, run_id, status="failed", error=str(plan))
            return await self._finished(ticket, run_id)
        queued = {} if started.first is None else {started.first[0]: started.first[1:]}
        budget = self._budgets[run_id] = RunBudget(self.settings.max_run_stored_bytes)
        if started.first is not None:  # (written with the run's start: within the limit)
            budget.used += len(started.first[3].text)
        try:
            return await self._run_plan(
                ticket, plan, run_id, context, queued, main, stop_reason, steps_over
            )
        finally:  # a held step end that no write took: its VMs are still recorded destroyed
            self._budgets.pop(run_id, None)
            held = self._held.pop(run_id, None)
            if held is not None:
                await record_destroyed(self.gate, self.writes, held.destroyed)
            self._stopped.pop(run_id, None)
            self._log_notes.pop(run_id, None)
            left = self._aborting.pop(run_id, [])  # (a step stopped as the run ended anyway)
            await record_destroyed(self.gate, self.writes, left)

    async def _start(self, ticket: Ticket, plan: Plan | SwarmError) -> Started:
        context, first, start = self._opening(ticket, plan)
        return started_from(await self.write(ticket, start), context, first)

    async def _run_plan(
        self,
        ticket: Ticket,
        plan: Plan,
        run_id: int,
        context: dict[str, Any],
        queued: dict[str, Queued],
        main: asyncio.Task[Any],
        stop_reason: list[LostReason],
        steps_over: Callable[[], None],
    ) -> Ticket:
        runs = self.store.runs
        rowed = set(queued)  # (the first step's row was written with the run's start)
        self._rowed[run_id] = (plan, rowed)
        try:
            try:
                # a host shortage that the ticket's timeout cuts short is named with it
                with shortage.noticing() as cut:
                    async with asyncio.timeout(plan.timeout_seconds):
                        outputs = await execute(self, plan, ticket, run_id, context, queued, rowed)
                over = self.budget(run_id).over  # a step's log passed it as its step ended
                if over is not None:
                    raise RunFailed(over)
            finally:  # every step's VM is destroyed by now (the pool's own `finally`)
                steps_over()
            await self._close(
                ticket,
                run_id,
                status="done",
                outputs=outputs,
                # stored once (issue 8.5): not again in workflow_runs when it only repeats
                # step rows (one agent's outputs, or a workflow's leaf outputs by step id)
                outputs_in_steps=plan.workflow is None or plan.workflow.outputs is None,
            )
        except RunFailed as exc:  # a step failed, or the result is over its cap
            why = f"step {exc.step_id!r} failed" if isinstance(exc, StepFailed) else str(exc)
            await self._close(ticket, run_id, status="failed", error=str(exc), not_run=why)
        except TimeoutError:
            error = f"ticket timed out after {plan.timeout_seconds:g}s"
            if cut:  # its steps' starts were waiting on a shortage of the host
                error += f" while waiting on a host shortage: {cut[0]}"
            await self._close(ticket, run_id, status="failed", error=error, not_run=error)
        except StaleAttemptError as exc:
            # the attempt is over: the keeper has nothing left to stop (its cancel, for the
            # loss this close is about, came while the close waited on the store and cut
            # it short: the run stayed `running` on this live engine, the ticket for ever)
            self.keeper.release(str(ticket.attempt_id))
            if isinstance(exc, TicketDeletedError):  # its run would stay `running`
                await self._abandon(run_id, "stopped: the ticket was deleted during the run")
                raise
            if not isinstance(exc, AttemptEndedError):  # (that one was logged)
                log.warning("ticket %s: %s; run %s abandoned", ticket.id, exc, run_id)
                # its own run, left `running`, would keep the ticket from any new claim
                await self._abandon(run_id, f"stopped: this attempt lost the ticket ({exc})")
            if self.stopping:  # an abort now has nothing of this lost attempt to record
                self._aborted.add(ticket.id)
            await taken_back(main, stop_reason)
        except asyncio.CancelledError:
            if not stop_reason:  # the engine itself is being stopped: record, then go
                await self._abort(ticket, run_id)
                raise
            main.uncancel()
            ended = self._ended.get(str(ticket.attempt_id))
            if stop_reason[0] == "deleted":  # seen by the lease keeper
                ended = self._deleted(ticket, "seen by the lease keeper")
            if isinstance(ended, TicketDeletedError):
                await self._abandon(run_id, "stopped: the ticket was deleted during the run")
                raise ended from None
            if ended is not None or stop_reason[0] == "ended":
                pass  # the ticket was failed, its run closed, and that logged (`_refused`)
            elif stop_reason[0] == "cancelled":
                try:
                    await self._close(
                        ticket, run_id, status="cancelled", not_run="the ticket was cancelled"
                    )
                except StaleAttemptError:  # reopened meanwhile: the reopen left the run
                    cancel = functools.partial(  # to its engine
                        runs.cancel_run, skipped=self._not_run(run_id),
                        why="the ticket was cancelled",
                    )  # fmt: skip
                    await self._unfenced(cancel, run_id, REOPENED)
            else:
                if stop_reason[0] == "lost":  # (an expired lease: the keeper said so)
                    log.warning(
                        "ticket %s: this attempt lost the ticket (reclaimed, or reset by"
                        " another writer); run %s stopped",
                        ticket.id,
                        run_id,
                    )
                why = (  # the keeper's own clock: the ticket may still be this attempt's
                    "stopped: its lease ran out without a renewal (the store did not take"
                    " one in time)"
                    if stop_reason[0] == "expired"
                    else "stopped: this attempt lost the ticket"
                )
                await self._abandon(run_id, why)
            await taken_back(main, [])  # (the keeper's cancel was taken back above)
        finally:
            self._rowed.pop(run_id, None)
        return await self._finished(ticket, run_id)

    async def _abort(self, ticket: Ticket, run_id: int) -> None:
        """The engine is stopping this run: record it failed (`abort_error`) and the ticket
        re-queued or failed (`abort_status`; failed once its attempts are used up), with
        its steps' VMs destroyed, in one write. A busy store is waited out for as long as
        the attempt's lease is held, to the end whatever cancel comes meanwhile; if the
        lease is given up first the ticket is left to the expired-lease reclaim and named
        in `unrecorded`."""
        attempt = str(ticket.attempt_id)
        self._aborted.add(ticket.id)
        requeue = self.abort_status == "open" and ticket.attempts < ticket.max_attempts
        self.keeper.finishing(attempt)
        destroyed = self._aborting.pop(run_id, [])
        error = self.abort_error.format(id=ticket.id)
        write = self.gate.retrying_while(
            lambda: self.keeper.holds(attempt),
            self.writes.close_run,
            run_id,
            ticket,
            status="failed",
            error=error,
            ticket_status="open" if requeue else "failed",
            step_end=self._held.get(run_id),
            destroyed=destroyed,
            stopped=self._stopped.pop(run_id, []),
            skipped=self._not_run(run_id),
            why=error,
            log_notes=self._log_notes.pop(run_id, []),
        )
        try:
            await to_the_end(asyncio.ensure_future(write))
        except StoreBusyError:  # its VMs too are left to the reaper (`abort_outcome` says)
            self._held.pop(run_id, None)
            self.left_claimed(ticket)
            return
        except StoreError as exc:
            if not isinstance(exc, StaleAttemptError):  # a constraint, a trigger's RAISE
                self.abort_refused[ticket.id] = str(exc)
            # else not this attempt's any more (reclaimed, cancelled): its run is closed
            await self._abandon(run_id, self.abort_error.format(id=ticket.id))
            await record_destroyed(self.gate, self.writes, destroyed)
            return
        self.recorded_aborts.add(ticket.id)
        self._emit_held(run_id)

    def ended_here(self, ticket: Ticket) -> bool:
        """Whether this attempt of `ticket` ended it (closed its run with its status), as
        opposed to losing it to another writer; asked once, after the run."""
        attempt = str(ticket.attempt_id)
        ended = attempt in self.closed_attempts
        self.closed_attempts.discard(attempt)
        return ended

    def abort_outcome(self, ticket_id: int) -> str:
        """One line on what the engine's abort of `ticket_id`'s run left in the store."""
        if ticket_id in self.unrecorded:
            return (
                f"ticket {ticket_id} aborted, but not recorded: the store stayed busy until"
                " its lease was given up (re-queued when its lease expires)"
            )
        if ticket_id in self.abort_refused:
            return (
                f"ticket {ticket_id} aborted; its abort could not be recorded: "
                + (self.abort_refused[ticket_id])
            )
        if ticket_id in self.recorded_aborts:
            return f"ticket {ticket_id} aborted: its run recorded failed"
        return f"ticket {ticket_id} aborted"

    def aborted_step(
        self, run_id: int, destroyed: list[Destroyed], end: StepEnd | None = None
    ) -> None:
        """A step of run `run_id` was stopped by the engine's abort: its VMs (moved out of
        `destroyed`) and its end, if it started (`cancelled`, with the usage it was billed
        so far), are recorded with the run's abort (`_abort`)."""
        self._aborting.setdefault(run_id, []).extend(destroyed)
        del destroyed[:]
        if end is not None:
            self._stopped.setdefault(run_id, []).append(end)

    def log_cut(self, run_id: int, exec_id: int, note: str) -> None:
        """The stored log of step `exec_id` of run `run_id` is cut short (stopped while the
        store was busy: `LogShipper.cut_note`): `note` ends it, stored with the run's end
        (the attempt's next write; the store was busy until now)."""
        self._log_notes.setdefault(run_id, []).append((exec_id, note))

    def left_claimed(self, ticket: Ticket) -> None:
        """The engine stops without recording the end of `ticket`'s attempt: the store
        still says it holds the ticket, until its lease expires and is reclaimed."""
        self.unrecorded[ticket.id] = None

    async def _abandon(self, run_id: int, error: str) -> None:
        abandon = functools.partial(self.store.runs.abandon_run, skipped=self._not_run(run_id))
        await self._unfenced(abandon, run_id, error)

    async def _unfenced(self, close: Callable[[int, str], None], run_id: int, error: str) -> None:
        await unfenced(self.gate, close, run_id, error)

    async def _close_left(self, ticket: Ticket, crash: Exception | None) -> None:
        """The attempt's task ends: a run of it the store still marks `running` is closed
        (`closing.close_left`), unless this runner recorded its close itself, or an abort
        the busy store kept from being recorded (`unrecorded`: the lease reclaim closes
        that run, as before)."""
        if (
            str(ticket.attempt_id) in self.closed_attempts
            or ticket.id in self.recorded_aborts
            or ticket.id in self.unrecorded
        ):
            return
        if not await close_left(self.gate, self.store, ticket, crash):
            self.left_claimed(ticket)  # the store was given up: its lease settles it

    async def _close(
        self,
        ticket: Ticket,
        run_id: int,
        *,
        status: str,
        outputs: Any = None,
        error: str | None = None,
        outputs_in_steps: bool = False,
        not_run: str | None = None,
    ) -> None:
        """Close the run and the ticket (`RunStore.finish_run`), fenced and retried; the
        end of its only step goes first if it was held back for it, and with a `not_run`
        reason the steps that never had a row are recorded skipped (`not run: REASON`);
        the final rows are read in the same transaction, for `_finished`."""
        self._closed[run_id] = await self.write(
            ticket,
            self.writes.close_run,
            run_id,
            ticket,
            status=status,
            outputs=outputs,
            error=error,
            outputs_in_steps=outputs_in_steps,
            step_end=self._held.get(run_id),
            skipped=[] if not_run is None else self._not_run(run_id),
            why=not_run,
            log_notes=self._log_notes.pop(run_id, []),
        )
        self._emit_held(run_id)

    def _not_run(self, run_id: int) -> list[SkippedStep]:
        """Run `run_id`'s steps that never had a row, to be recorded with its end."""
        plan, rowed = self._rowed.get(run_id, (None, set()))
        return [] if plan is None else not_run(plan, rowed)

    def budget(self, run_id: int) -> RunBudget:
        """What run `run_id` may still store in its steps' rows (`bounds.RunBudget`)."""
        found = self._budgets.get(run_id)  # (set by `_run` for the run's whole life)
        return found if found is not None else RunBudget(self.settings.max_run_stored_bytes)

    def holder(self, run_id: int) -> Callable[[StepEnd], None]:
        """Where the successful end of run `run_id`'s only step is handed, to be written
        with the run's end (`StepAttempt`'s `on_held`)."""
        return functools.partial(self._held.__setitem__, run_id)

    def _emit_held(self, run_id: int) -> None:
        """The held step end was written with the run's end: its event now."""
        held = self._held.pop(run_id, None)
        if held is not None and held.event is not None:
            self.events(held.event)

    async def _finished(self, ticket: Ticket, run_id: int) -> Ticket:
        closed = self._closed.pop(run_id, None)
        if closed is not None:
            final, run = closed
            self.closed_attempts.add(str(ticket.attempt_id))
        else:  # closed by another path (or not at all): read what the store holds
            final = await self.gate.retrying(self.store.tickets.get, ticket.id)
            run = await self.gate.retrying(self.store.runs.get_run, run_id)
        self.events(Event("run_finished", ticket.id, run_id, data={"ticket": final, "run": run}))
        return final


def _nothing() -> None:
    return None


def named_workflow(ticket: Ticket) -> tuple[str | None, str | None]:
    """The workflow (name, version or None) a workflow ticket names, as far as its
    `workflow_id` reads as a reference: what the run of a plan that failed to resolve
    records, so `workflow runs NAME` lists the failed runs of a broken workflow too."""
    if ticket.execution_mode != "workflow" or not ticket.workflow_id:
        return None, None
    name, _, version = ticket.workflow_id.partition("@")
    if not NAME_RE.match(name):
        return None, None
    return name, version if VERSION_RE.match(version) else None
