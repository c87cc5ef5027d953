"""An engine session: the store, the registry, a VM pool and this engine's row.

Both `run-ticket --wait` and the daemon run tickets through a session. Entering it
registers the engine and starts its lease keeper; leaving it closes the pool and marks
the engine stopped. Every store call of a session goes through its `StoreGate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

from swarm_engine.agents.kinds import get_agent, load_kinds
from swarm_engine.config import Settings
from swarm_engine.engine.enginerow import EngineRow
from swarm_engine.engine.events import EventSink, ignore
from swarm_engine.engine.gate import ROW_LOCK_SLICE, StoreGate
from swarm_engine.engine.leases import LeaseKeeper
from swarm_engine.engine.model_api import preflight as model_api_preflight
from swarm_engine.engine.opening import Started
from swarm_engine.engine.orphans import LeftRuns
from swarm_engine.engine.plan import Plan, attempts_exceeded, build_plan
from swarm_engine.engine.reaper import ReapReport, reap_engines, reap_vms, vm_fence
from swarm_engine.engine.runner import TicketRunner
from swarm_engine.errors import (
    AttemptsUsedError,
    ConfigError,
    HostShortageError,
    NotFoundError,
    StaleAttemptError,
    StoreBusyError,
    StoreError,
    StoreGoneError,
    SwarmError,
)
from swarm_engine.registry import Registry
from swarm_engine.schema_check import MAX_HELPERS, SchemaChecker
from swarm_engine.store import Store, Ticket, open_store
from swarm_engine.store.engines import holder
from swarm_engine.store.errortext import UNCOUNTED
from swarm_engine.store.passover import PASS_OVER_HEARTBEATS
from swarm_engine.store.tickets import lease_ran_out, not_claimable, spent_by_reclaim
from swarm_engine.vm.backends import create_backend
from swarm_engine.vm.base import VMBackend, VMInfo, VMSpec
from swarm_engine.vm.bwrap import SHORTAGES
from swarm_engine.vm.pool import VMPool
from swarm_engine.vm.proctree import pid_alive

log = logging.getLogger(__name__)

AttemptCount = Literal["claimed", "next"] | None
"""Which attempt of a ticket `Session.plan` checks against its `max_attempts`."""
OPEN = ("draft", "open")
"""The statuses `run-ticket` claims a ticket from (a lapsed lease is reclaimed first)."""

Claimed = tuple[Ticket, Plan | SwarmError | None, Started | None]
"""A ticket claimed by the daemon, its plan and its run (see `claim_planned`)."""


def attempts_over(ticket: Ticket, attempt: AttemptCount) -> AttemptsUsedError | None:
    """Why `ticket` must not run the attempt `attempt` names (`claimed`: the one a claim
    counted in `ticket.attempts`; `next`: the one after them; None: not checked), or None.
    A claim counts no attempt for a row whose attempts are no count below its
    max_attempts (`errortext.UNCOUNTED` in its `error`): such a claim is always refused,
    with the line of the attempt after them."""
    if attempt is None:
        return None
    uncounted = attempt == "claimed" and ticket.error == UNCOUNTED
    over = attempts_exceeded(
        ticket, ticket.attempts + (attempt == "next" or uncounted), claimed=attempt == "claimed"
    )
    if over is None and uncounted:  # (the store and this check disagree: never run it)
        over = f"ticket {ticket.id}: {UNCOUNTED}"
    return None if over is None else AttemptsUsedError(over)


class StoreRecorder:
    """Records the pool's VM transitions in the `vms` table (through the gate, patiently:
    bookkeeping waits for a busy store rather than failing the step; once an engine that
    is being stopped gives up waiting, `StoreGate.give_up_after`, what is not recorded is
    left to the reaper, and the stop goes on)."""

    def __init__(self, store: Store, gate: StoreGate, row: EngineRow) -> None:
        self.store = store
        self.gate = gate
        self.row = row
        self.engine_id = row.engine_id
        self.host = row.host

    async def booting(self, vm_id: str, backend: str, spec: VMSpec) -> None:
        await self._patiently(self._record_boot, vm_id, backend, spec)

    def _record_boot(self, vm_id: str, backend: str, spec: VMSpec) -> None:
        """(On the store thread.) The VM names its engine: refused because another writer
        deleted the engine's row, the row is put back and the VM recorded."""
        self.row.keeping(
            self.store.vms.record_boot,
            vm_id,
            backend=backend,
            host=self.host,
            engine_id=self.engine_id,
            owner_pid=os.getpid(),
            memory_mb=spec.memory_mb,
            vcpus=spec.vcpus,
        )

    async def ready(self, vm_id: str, info: VMInfo) -> None:
        await self._patiently(
            self.store.vms.record_ready,
            vm_id,
            pid=info.pid,
            workspace=info.workspace,
            socket_path=info.socket_path,
            overlay_path=info.overlay_path,
            isolation=info.isolation,
        )

    async def destroyed(self, vm_id: str, error: str | None) -> None:
        await self._patiently(self.store.vms.record_destroyed, vm_id, error)

    async def _patiently(self, fn: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        try:
            await self.gate.retrying(fn, *args, **kwargs)
        except StoreBusyError as exc:
            if not self.gate.given_up():
                raise
            log.info("VM %s not recorded (the engine stops): %s", args[0], exc)


def new_engine_id(host: str) -> str:
    """`<host>:<pid>:<6 hex>`: unique, and says where the engine runs."""
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class EngineSession:
    def __init__(
        self,
        settings: Settings,
        *,
        kind: str = "run-ticket",
        max_vms: int | None = None,
        backend: str | None = None,
        events: EventSink = ignore,
    ) -> None:
        self.settings = settings
        self.kind = kind
        self.max_vms = max_vms or settings.max_vms
        self.backend_name = backend or settings.backend
        self.events = events
        self.engine_id = new_engine_id(settings.host_id)
        self.registered = False
        self.claiming = False
        """`run_ticket` started to claim its ticket."""
        self.claimed = False
        """`run_ticket` claimed its ticket (the store said so)."""
        self.state: str | None = None
        """What the heartbeat records as the engine's state (None: leave it)."""
        self.store: Store = open_store(settings.tickets_target, busy_timeout=settings.busy_timeout)
        for passed in (self.store.tickets.skipped, self.store.tickets.frozen):
            passed.retry_after = PASS_OVER_HEARTBEATS * settings.heartbeat_interval
        try:
            self.registry = Registry(
                settings.registry_target, settings.packages_dir, busy_timeout=settings.busy_timeout
            )
        except BaseException:
            self.store.close()
            raise
        row_locks = self.store.db.dialect == "postgresql"  # (SQLite: one lock, for all)
        self.gate = StoreGate(
            self.store.db.wait_at_most,
            lambda: self.store.db.writes,
            lock_slice=min(ROW_LOCK_SLICE, settings.heartbeat_interval / 4) if row_locks else None,
        )
        self.gate.on_gone = self._store_gone
        self.row = EngineRow(
            self.store, self.engine_id, kind=kind, host=settings.host_id, pid=os.getpid(),
            max_vms=self.max_vms, backend=self.backend_name,
        )  # fmt: skip
        self.end_unrecorded = False
        """The store was given up before this engine's end (`engines.stopped`) was
        recorded: its row says `running` or `draining` until `cleanup` or a start."""
        self.gone: str | None = None
        """Why this session stopped using its store: its file went away (`StoreGoneError`)."""
        self.on_gone: Callable[[str], None] = lambda why: None
        """Called once, with `gone`, when the store's file is seen gone: the session's
        owner stops its runs (the daemon, `run-ticket`)."""
        self.pool = VMPool(
            self.max_vms,
            self._make_backend,
            self.backend_name,
            StoreRecorder(self.store, self.gate, self.row),
        )
        self.keeper = LeaseKeeper(
            self.store,
            self.gate,
            self.engine_id,
            lease_ttl=settings.lease_ttl,
            heartbeat_interval=settings.heartbeat_interval,
            busy_vms=lambda: self.pool.busy,
            state=lambda: self.state,
            restore_row=self.row.put_back,
            row_restored=self.row.note_put_back,
        )
        self.keeper_task: asyncio.Task[None] | None = None
        self.runner = TicketRunner(
            store=self.store,
            gate=self.gate,
            keeper=self.keeper,
            pool=self.pool,
            settings=settings,
            engine_id=self.engine_id,
            events=events,
            checker=SchemaChecker(size=min(self.max_vms, MAX_HELPERS)),
            engine_row=self.row,
        )

    def _make_backend(self, name: str) -> VMBackend:
        return create_backend(name, self.settings.home, self.settings.backend_options.get(name))

    async def __aenter__(self) -> EngineSession:
        try:
            self.pool.backend()  # fail early on an unknown backend
            if self.kind == "daemon":
                load_kinds()  # now, while the host has file descriptors to import them
                await self._register()
                await self.pool.start()
            self.keeper_task = asyncio.create_task(self.keeper.run(), name="lease-keeper")
        except BaseException:
            if self.registered:  # (its start failed, e.g. no VM image): not left "running"
                with contextlib.suppress(StoreError):
                    await self.gate(self.store.engines.stopped, self.engine_id)
            await self._close()
            raise
        return self

    async def _register(self) -> None:
        if self.registered:
            return
        await self.gate.retrying(self.row.register)
        self.registered = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopping()  # (its runs are over: what is left to write is bounded too)
        try:
            await self.pool.close()
        finally:
            if self.keeper_task is not None:
                self.keeper_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self.keeper_task
            if self.registered:
                try:
                    await self.gate.retrying(self.store.engines.stopped, self.engine_id)
                except StoreBusyError:  # given up: `cleanup` or the next start records it
                    self.end_unrecorded = True
                except StoreError:
                    pass
            await self._close()

    async def _close(self) -> None:
        self.runner.checker.close()
        if not self.gate.close():  # a call still waits on a store given up: its
            return  # connection is left to the process's end, never waited for
        self.registry.close()
        self.store.close()

    def stopping(self) -> None:
        """The engine is told to stop (drains): a store that goes one `lease_ttl` without
        answering from now on (or from its last answer, if later) is given up, so the
        engine exits in bounded time however the store fails (`StoreGate.stopping`)."""
        self.gate.stopping(self.settings.lease_ttl)

    def _store_gone(self, exc: StoreGoneError) -> None:
        if self.gone is None:
            self.gone = str(exc)
            self.on_gone(self.gone)

    def abort(self, grace: float | None = None) -> None:
        """Stop the runs of this session now (the caller cancels their tasks): each records
        its abort (`TicketRunner.stopping`), and from now on no busy store is waited out
        for longer than `grace` (one `lease_ttl` unless given) nor past the stop's own
        bound (`stopping`), so the engine exits in bounded time."""
        self.runner.stopping = True
        self.keeper.aborting = True
        self.stopping()
        self.gate.give_up_after(self.settings.lease_ttl if grace is None else grace)

    async def _plan_patiently(self, ticket: Ticket) -> Plan | SwarmError:
        # on the store thread (the registry is a database too), patiently: a busy or
        # restarting database is a delay, never the ticket's error, for as long as the
        # claim's lease surely holds (nothing renews it before the run starts)
        patience = time.monotonic() + self.settings.lease_ttl / 2
        try:
            return await self.gate.retrying_while(
                lambda: time.monotonic() < patience, self.plan, ticket
            )
        except HostShortageError as exc:  # still short at the end: the ticket's error
            waited = self.settings.lease_ttl / 2
            return HostShortageError(
                f"{exc} for {waited:g}s (out of file descriptors, memory or processes):"
                " raise ulimit -n or lower --max-vms"
            )
        except StoreBusyError as exc:  # the lease ran out meanwhile: the ticket is not ours
            raise StaleAttemptError(
                f"ticket {ticket.id}: the lease ran out while the registry was busy ({exc})"
            ) from exc
        except StoreGoneError:  # the registry's file went away: the engine stops
            raise
        except SwarmError as exc:
            return exc
        except Exception as exc:  # a definition that breaks a resolver: that ticket only
            log.exception("ticket %s: resolving its plan crashed", ticket.id)
            return ConfigError(f"cannot resolve ticket {ticket.id}: {type(exc).__name__}: {exc}")

    def plan(self, ticket: Ticket, *, attempt: AttemptCount = "claimed") -> Plan:
        """Resolve the ticket's agent/workflow and run each agent kind's host checks.
        A malformed row or definition raises `ConfigError` naming the field, as does an
        attempt past the ticket's `max_attempts` (`attempt`: `claimed`, the one a claim
        counted in `ticket.attempts`; `next`, the one after them; None: not checked)."""
        if ticket.problem is not None:
            raise ConfigError(ticket.problem)
        over = attempts_over(ticket, attempt)
        if over is not None:
            raise over
        try:
            plan = build_plan(ticket, self.registry)
            for step in plan.steps.values():
                agent = get_agent(step.agent.kind, self.settings.agents.get(step.agent.kind))
                agent.preflight(step.agent)
                model_api_preflight(agent, step.agent, self.settings, os.environ)  # issue 14
        except OSError as exc:  # importing an agent kind, out of fds: waited out as a
            if exc.errno not in SHORTAGES:  # busy registry is (never the ticket's error)
                raise
            raise HostShortageError(f"resolving the plan: {exc.strerror}") from exc
        return plan

    async def run_ticket(self, ticket_id: int) -> Ticket:
        """Claim one ticket by id and run it to the end (`run-ticket --wait`).

        Resolution errors (unknown agent, missing key, a malformed row) are raised before
        the claim, so they change nothing. The claimed row is planned again (another
        client may have changed it since it was read): what fails then fails the ticket.
        """
        ticket = await self.gate.retrying(self.store.tickets.get, ticket_id)
        # an open ticket's next attempt is checked here; a lapsed one's reclaim, below,
        # re-queues or fails it by its attempts as every reclaim does
        plan = self.plan(ticket, attempt="next" if ticket.status in OPEN else None)
        if ticket.status not in OPEN and not lease_ran_out(ticket):
            raise not_claimable(ticket, await self._holder(ticket))
        # each VM backend its steps name is made ready first (its image checked): one
        # that cannot boot is a `VMError` (exit 7) that leaves the ticket as it was
        names = self._backends_of(plan)
        for name in sorted(names):
            await self.pool.backend(name).start()
        await self._register()
        # a run an engine that is gone left `running` (its ticket cancelled and reopened)
        # would keep the claim from ever happening without a daemon: closed here by the
        # daemons' rule (`engine/orphans.py`), never while that engine may still run it
        settings = self.settings
        left = LeftRuns(settings.host_id, settings.lease_ttl)
        fence = vm_fence(settings.home, settings.host_id, settings.backend_options)
        # as a daemon's rounds do: this host's gone engines recorded dead and their VMs
        # (a sandbox a killed engine left running) reaped, expired leases re-queued
        gone = ReapReport()
        await self.gate.retrying(
            reap_engines, self.store, settings.host_id, gone, settings.lease_ttl
        )
        await self.gate.retrying(
            reap_vms, self.store, settings.home, settings.host_id, gone,
            settings.backend_options, settings.lease_ttl,
        )  # fmt: skip
        await self.gate.retrying(self.store.tickets.reclaim_expired, fence)
        spare = left.spare(self.store)
        await self.gate.retrying(self.store.engines.forget_silent, left.silent_for, spare)
        await self.gate.retrying(left.close, self.store, ticket_id)
        if ticket.status not in OPEN:  # its lease ran out: re-queued above,
            ticket = await self.gate.retrying(self.store.tickets.get, ticket_id)  # or not
            if ticket.status == "failed":
                raise spent_by_reclaim(ticket)
            if ticket.status not in OPEN:
                raise not_claimable(ticket, await self._holder(ticket))
            # re-queued: its next attempt is checked as an open ticket's is (a lapsed row
            # whose attempts were -5 was re-queued, claimed uncounted and run)
            plan = self.plan(ticket, attempt="next")
        self.claiming = True  # (an interrupt from now on may leave it claimed)
        claimed = await self.gate.retrying(
            self.store.tickets.claim,
            ticket_id,
            engine_id=self.engine_id,
            attempt_id=uuid.uuid4().hex,
            lease_ttl=self.settings.lease_ttl,
        )
        self.claimed = True
        if claimed.error == UNCOUNTED:  # changed since it was read: never run uncounted,
            # whatever else its row now holds (a plan of the changed row could raise a
            # ConfigError first and leave it claimed until its lease ran out)
            why = attempts_over(claimed, "claimed")
            assert why is not None  # (an uncounted claim is always refused)
            await self._refuse_claimed(claimed, why)
            raise why
        # the row as claimed is what runs: another client may have changed it since it was
        # read (its agent, its inputs), so its plan is made again from it (the plan of the
        # row read first ran another agent than the run recorded); a plan that now fails
        # fails the ticket with its line, as a daemon's claim does
        again = await self._plan_patiently(claimed)
        if isinstance(again, AttemptsUsedError):
            await self._refuse_claimed(claimed, again)
            raise again
        if not isinstance(again, SwarmError):
            try:  # a backend the first plan did not name
                for name in sorted(self._backends_of(again) - names):
                    await self.pool.backend(name).start()
            except SwarmError as exc:
                again = exc
        return await self.runner.run(claimed, again)

    def _backends_of(self, plan: Plan) -> set[str]:
        """The VM backends the steps of `plan` run on, by name."""
        return {s.agent.vm.backend or self.pool.default_backend for s in plan.steps.values()}

    async def _holder(self, ticket: Ticket) -> str | None:
        """Who holds a live ticket, and whether it runs (`store.engines.holder`)."""
        if ticket.status not in ("claimed", "running"):
            return None
        engine = await self.gate.retrying(self.store.engines.get, ticket.engine_id)
        return holder(ticket, engine, host=self.settings.host_id, alive=pid_alive)

    def claim_planned(self, *, attempt_id: str, limit: int) -> list[Claimed]:
        """(On the store thread.) Claim up to `limit` open tickets and, in the same
        hand-off, resolve each one's plan and start its run: `(ticket, plan, started)`.
        The plan is the plan, the error resolving it raised (the ticket fails with it), or
        None when the registry was busy (`run_claimed` retries); `started` is None when
        the run was not started here (`TicketRunner.start_now`)."""
        claimed = self.store.tickets.claim_next(
            engine_id=self.engine_id,
            attempt_id=attempt_id,
            lease_ttl=self.settings.lease_ttl,
            limit=limit,
        )
        out: list[Claimed] = []
        for ticket in claimed:
            plan = self._try_plan(ticket)
            # (no run is started for a ticket past its attempts: `run_claimed` refuses it)
            run = None if plan is None or isinstance(plan, AttemptsUsedError) else plan
            out.append((ticket, plan, None if run is None else self.runner.start_now(ticket, run)))
        return out

    async def _refuse_claimed(self, ticket: Ticket, why: AttemptsUsedError) -> None:
        """Fail a claimed ticket that was open past its attempts, without a run: its
        `attempts` back as its writer stored them (the claim counted one more that never
        ran), the reason in its `error` and one line in the log."""
        assert ticket.attempt_id is not None
        if await self.gate.retrying(
            self.store.tickets.refuse_claimed, ticket.id, ticket.attempt_id, str(why)
        ):
            log.error("%s", why)
        else:  # cancelled or reclaimed meanwhile: its new owner's to say
            log.info("ticket %s: not refused: it changed since its claim", ticket.id)

    def _try_plan(self, ticket: Ticket) -> Plan | SwarmError | None:
        try:
            return self.plan(ticket)
        except StoreBusyError:
            return None
        except StoreGoneError:  # the registry's file went away: not this ticket's doing
            raise  # (the engine stops; the claim is left to its lease, as after a crash)
        except SwarmError as exc:
            return exc
        except Exception as exc:  # a definition that breaks a resolver: that ticket only
            log.exception("ticket %s: resolving its plan crashed", ticket.id)
            return ConfigError(f"cannot resolve ticket {ticket.id}: {type(exc).__name__}: {exc}")

    async def run_claimed(
        self,
        ticket: Ticket,
        steps_over: Callable[[], None] | None = None,
        plan: Plan | SwarmError | None = None,
        started: Started | None = None,
    ) -> Ticket | None:
        """Run a ticket the daemon already claimed; resolution errors fail the ticket.
        `steps_over`: see `TicketRunner.run`; `plan` and `started`: as `claim_planned`
        resolved and started it.

        Whatever goes wrong, the ticket does not stay claimed: an unexpected error fails
        it with a one-line reason (unless the attempt lost the ticket meanwhile).
        """
        if plan is None:
            try:
                plan = await self._plan_patiently(ticket)
            except asyncio.CancelledError:
                if self.runner.stopping:  # claimed, no run: left to the lease reclaim
                    self.runner.left_claimed(ticket)
                raise
        if isinstance(plan, AttemptsUsedError):
            await self._refuse_claimed(ticket, plan)
            return None
        try:
            return await self.runner.run(ticket, plan, steps_over, started)
        except (asyncio.CancelledError, StaleAttemptError):
            raise
        except NotFoundError as exc:  # the row was deleted while it ran: nothing to record
            log.warning("ticket %s: %s; its run was stopped", ticket.id, exc)
            return None
        except Exception as exc:
            if isinstance(exc, StoreBusyError) and self.gate.given_up():  # the engine stops
                log.info("ticket %s: %s; its end is left to its lease's expiry", ticket.id, exc)
                self.runner.left_claimed(ticket)
                return None
            log.exception("ticket %s: the run crashed", ticket.id)
            error = f"internal error: {type(exc).__name__}: {exc}"
            assert ticket.attempt_id is not None
            with contextlib.suppress(StoreError):
                await self.gate.retrying_while(
                    lambda: True, self.store.tickets.fail_attempt, ticket.id, ticket.attempt_id,
                    error,
                )  # fmt: skip
            with contextlib.suppress(StoreError):  # a run left open would block the ticket
                await self.gate.retrying(self.store.runs.abandon_attempt, ticket.attempt_id, error)
            return None
