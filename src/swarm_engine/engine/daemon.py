"""The polling engine: claims open tickets and runs them, many at once.

One asyncio loop with supervised side tasks (the lease keeper, the reclaimer, the store
watcher). A busy store never kills one (they retry); any other failure of a side task
stops the daemon loudly. Stop protocol: the first stop request drains (no new
claims; running tickets finish), the second aborts (running tickets are cancelled,
their VMs destroyed, and the tickets re-queued for another attempt). An abort that a busy
store keeps from being recorded is retried while the ticket's lease is held; a ticket
whose lease is given up first stays `running` in the store until its lease expires and
any engine (or `cleanup`) re-queues it: `Daemon.unrecorded` names those. From the first
stop on, a store that goes one `lease_ttl` without answering is given up (the drain and
the abort alike), so a stop ends in bounded time even when the store is gone.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from swarm_engine.config import Settings
from swarm_engine.engine.cron import CronFirer
from swarm_engine.engine.events import EventSink, ignore
from swarm_engine.engine.orphans import LeftRuns
from swarm_engine.engine.reaper import (
    ReapReport,
    cleanup,
    reap_engines,
    reap_vms,
    removed_line,
    vm_fence,
)
from swarm_engine.engine.session import Claimed, EngineSession
from swarm_engine.engine.wakeup import Watcher, open_watcher
from swarm_engine.errors import (
    AttemptEndedError,
    StaleAttemptError,
    StoreBusyError,
    StoreError,
    StoreGoneError,
    SwarmError,
)
from swarm_engine.store.dbfile import file_identity, name_moved
from swarm_engine.store.passover import PASS_OVER_HEARTBEATS, PassedOver
from swarm_engine.vm import shortage

log = logging.getLogger(__name__)

ABORT_GRACE = 0.5
"""From the abort on (a second stop), the store is waited for at most this part of
`lease_ttl` more, and never past the first stop's bound (`EngineSession.stopping`)."""


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        max_vms: int | None = None,
        backend: str | None = None,
        poll_interval: float | None = None,
        until_idle: bool = False,
        events: EventSink = ignore,
    ) -> None:
        self.settings = settings
        self.max_vms = max_vms or settings.max_vms
        self.backend = backend or settings.backend
        self.poll_interval = poll_interval or settings.poll_interval
        self.until_idle = until_idle
        self._stuck_said = PassedOver(PASS_OVER_HEARTBEATS * settings.heartbeat_interval)
        """Tickets whose expired lease the store refused to reclaim, already logged: said
        again once a pass-over interval, at most `passover.LIMIT` held."""
        self.events = events
        self.draining = asyncio.Event()
        self.active: dict[asyncio.Task[Any], int] = {}
        self.slots: set[int] = set()
        """Tickets holding one of the `max_vms` slots: claimed, until no step of theirs will
        boot a VM any more (recording a run's end does not hold a slot)."""
        self.claimed = 0
        """Tickets claimed (launched), each time one is."""
        self.aborted = 0
        """Of those, the ones whose run this engine cut short: aborted (a second stop, a
        store gone), or left leased to it when the store was given up (`unrecorded`)."""
        self._backlog = False
        """The last claim took every ticket it asked for: more are probably open."""
        self.started_report: ReapReport | None = None
        self.session: EngineSession | None = None
        self.cron: CronFirer | None = None
        self._stop_requests = 0
        self.on_ready: Callable[[], None] | None = None
        """Called once, when the first round of claims is done: the engine's start-up
        (registration, clean-up, side tasks, a first claim) went through."""
        self._slot_freed = asyncio.Event()
        self.failed: str | None = None
        self.failed_why: str | None = None
        self._reaped_at = 0.0
        """When (loop time) this engine last looked for engines of its host gone since."""
        """Why a side task stopped the engine, when it said so (a `SwarmError`)."""
        self._left_runs = LeftRuns(settings.host_id, settings.lease_ttl)
        """Runs left `running` by engines that are gone: who closes them, and when."""

    # -- stopping ------------------------------------------------------------------------
    def request_stop(self) -> str:
        """First call: drain. Second call: abort the running tickets. Later calls change
        nothing (the abort is under way). Returns what the engine does now: 'draining' or
        'aborting'."""
        self._stop_requests += 1
        if self._stop_requests == 1:
            log.warning(
                "stopping: draining %d running ticket(s); stop again to abort", len(self.active)
            )
            self.draining.set()
            if self.session is not None:  # recorded with the next heartbeat
                self.session.state = "draining"
                self.session.stopping()  # a store that stops answering is given up
            return "draining"
        if self._stop_requests == 2:
            log.warning(
                "aborting %d running ticket(s): their runs are recorded failed and the"
                " tickets re-queued",
                len(self.active),
            )
            self._abort()
        else:
            log.warning("already aborting %d running ticket(s)", len(self.active))
        return "aborting"

    def _abort(self) -> None:
        if self.session is not None:  # (a second stop goes faster than the first)
            self.session.abort(ABORT_GRACE * self.settings.lease_ttl)
        for task in self.active:
            task.cancel()

    @property
    def unrecorded(self) -> list[int]:
        """Tickets whose end (their abort, or the close of a run whose lease was given
        up) the store did not take before the engine stopped waiting for it: still
        `claimed`/`running` until the expired-lease reclaim re-queues them."""
        return [] if self.session is None else list(self.session.runner.unrecorded)

    @property
    def end_unrecorded(self) -> bool:
        """The store was given up before this engine's own end was recorded."""
        return self.session is not None and self.session.end_unrecorded

    @property
    def store_trouble(self) -> str | None:
        """What the store last said in failing a call (busy, unreachable), if it did."""
        return None if self.session is None else self.session.gate.trouble

    # -- running -------------------------------------------------------------------------
    async def run(self) -> None:
        session = EngineSession(
            self.settings,
            kind="daemon",
            max_vms=self.max_vms,
            backend=self.backend,
            events=self.events,
        )
        session.runner.abort_status = "open"
        session.runner.on_row_lost = self._row_lost
        self.session = session
        session.on_gone = self._store_gone
        if self._stop_requests:  # told to stop before its session was made
            session.stopping()
        try:
            await self._run(session)
        except StoreBusyError:
            if not session.gate.given_up():
                raise
            # a stopping engine gave the store up while starting: what that left
            # unrecorded is said by its caller (`unrecorded`, `end_unrecorded`)
        if self.failed_why:  # seen only as the engine ended (its store's file gone)
            raise SwarmError(f"engine stopped: {self.failed_why}")

    async def _run(self, session: EngineSession) -> None:
        async with session:
            self.started_report = await session.gate.retrying(
                cleanup,
                session.store,
                self.settings.home,
                self.settings.host_id,
                self.settings.backend_options,
                silent_after=self.settings.lease_ttl,
            )
            if removed := removed_line(self.started_report):  # (gone engines' leftovers:
                log.info("engine start: %s", removed)  # housekeeping, not a warning)
            for ticket_id in self.started_report.stuck:  # said by the start's cleanup: the
                self._stuck_said.add(ticket_id)  # reclaimer's first rounds say it no more
            watcher = open_watcher(self.settings)
            watcher.start()
            assert session.keeper_task is not None
            self.cron = CronFirer(session.store, session.registry, session.gate)
            side = [
                asyncio.create_task(self._supervised("lease keeper", self._watch_keeper)),
                asyncio.create_task(self._supervised("reclaimer", self._reclaimer)),
                asyncio.create_task(self._supervised("store watcher", watcher.run)),
                asyncio.create_task(self._supervised("cron triggers", self.cron.run)),
            ]
            target = self.settings.tickets_target
            if isinstance(target, Path):
                side.append(asyncio.create_task(
                    self._supervised("store file watch", lambda: self._watch_file(target))
                ))  # fmt: skip
            shortage.count_busy(lambda: len(self.active))  # (a wait that cannot end)
            try:
                await self._claim_loop(session, watcher)
                if self.until_idle and not self.draining.is_set() and not self.failed:
                    # idle: what engines of this host that died left (their VMs) is
                    # recorded before it goes, not left to the next start or `cleanup`
                    await self._reap_gone(session)
                if self.failed_why:
                    raise SwarmError(f"engine stopped: {self.failed_why}")
                if self.failed:
                    raise SwarmError(f"engine stopped: its {self.failed} task died (see the log)")
            finally:
                shortage.count_busy(None)
                for task in side:
                    task.cancel()
                await asyncio.gather(*side, return_exceptions=True)
                await watcher.aclose()

    async def _supervised(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        try:
            await body()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if self.failed_why is not None:  # the store went away: that says why
                pass
            elif isinstance(exc, SwarmError):  # it says why, in one line
                log.error("%s: %s; stopping the engine", name, exc)
                self.failed_why = str(exc)
            else:
                log.exception("side task %s died; stopping the engine", name)
            self.failed = name
            self._stop_requests = 2
            self.draining.set()
            self._abort()
            raise

    def _store_gone(self, why: str) -> None:
        """A store call found the store's (or registry's) file gone: stop now, before any
        other write, saying so (`StoreGoneError`)."""
        if self.failed_why is None:
            log.error("%s; stopping the engine", why)
            self.failed_why = why
            self.failed = "store"
            self._stop_requests = 2
            self.draining.set()
            self._abort()

    def _row_lost(self, why: str) -> None:
        """A run's start found this engine's `engines` row gone and not to be put back:
        no more claims (what it claimed and could not start goes back to the queue, the
        runner's doing); the engine drains and stops, saying why, once."""
        if self.failed_why is None:
            log.error("%s; stopping the engine", why)
            self.failed_why = why
            self.failed = "engine row"
            self.draining.set()

    async def _watch_file(self, path: Path) -> None:
        """Every heartbeat interval: the SQLite store's name still names the file this
        engine opened. Deleted or replaced (`rm`, `mv` over it), the engine would go on
        in a file nobody else sees, while another engine ran the new file's tickets: it
        stops instead (a stat, off the loop)."""
        opened = await asyncio.to_thread(file_identity, path)
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            why = await asyncio.to_thread(name_moved, path, opened)
            if why is not None:
                raise SwarmError(f"the store {path} was {why} while in use")

    async def _watch_keeper(self) -> None:
        """The session's lease keeper is a side task too: its death stops the engine."""
        assert self.session is not None and self.session.keeper_task is not None
        await self.session.keeper_task
        raise SwarmError("the lease keeper stopped")

    async def _reclaimer(self) -> None:
        """Every heartbeat interval: re-queue tickets whose lease ran out (any engine's),
        their VMs of this host stopped first (`vm_fence`: a frozen engine's sandboxes)."""
        assert self.session is not None
        session = self.session
        settings = self.settings
        fence = vm_fence(settings.home, settings.host_id, settings.backend_options)
        while True:
            session.state = "draining" if self.draining.is_set() else "running"
            try:
                expired = await session.gate(session.store.tickets.reclaim_expired, fence)
            except StoreBusyError as exc:
                session.gate.warn(f"reclaiming expired leases delayed: {exc}")
            else:
                requeued = [e.ticket_id for e in expired if e.status == "open"]
                failed = [e.ticket_id for e in expired if e.status == "failed"]
                for stuck in (e for e in expired if e.status == "stuck"):
                    if stuck.ticket_id not in self._stuck_said:  # once a ticket a pass-over
                        self._stuck_said.add(stuck.ticket_id)  # interval, not every round
                        log.warning("ticket %s: lease ran out, %s", stuck.ticket_id, stuck.error)
                    if stuck.refused:  # frozen by the store: --until-idle does not wait for it
                        await session.gate(session.store.tickets.frozen.add, stuck.ticket_id)
                if requeued:
                    log.warning("re-queued tickets with expired leases: %s", requeued)
                if failed:
                    log.warning("failed tickets whose leases expired too often: %s", failed)
                await self._forget_silent(session)
                await self._lower_sequences(session)
                loop_now = asyncio.get_running_loop().time()
                # an engine counts as gone once silent for a lease: looked for once a lease,
                # in a quiet round only (after a busy spell this engine's own lease keeper
                # goes first: its run ends saying its lease ran out)
                if not expired and loop_now - self._reaped_at >= self.settings.lease_ttl:
                    self._reaped_at = loop_now
                    await self._reap_gone(session)
            await asyncio.sleep(self.settings.heartbeat_interval)

    async def _lower_sequences(self, session: EngineSession) -> None:
        """An id sequence another client raised (SQLite) or wedged (PostgreSQL:
        `store/pgsequences.py`) is repaired here too, not only at this engine's next
        insert into that table: an outside writer's inserts into it are refused
        meanwhile (0009_ids_past_the_guard.sql), and a raised INCREMENT fails none."""
        try:
            await session.gate(session.store.lower_raised_sequences)
        except StoreGoneError:
            raise
        except StoreError as exc:  # busy, or a store fault: tried again next round
            log.debug("lowering raised id sequences delayed: %s", exc)

    async def _forget_silent(self, session: EngineSession) -> None:
        """Engines silent for two leases (a dead host) are recorded dead once their
        tickets were reclaimed, and the runs they left `running` closed (and so are those
        of engines recorded stopped, or whose row is gone: `engine/orphans.py`); their VMs
        are reaped when that host starts again. An engine of this host whose process lives
        is not dead, however long it has been silent (a frozen engine: its sandbox runs
        on, and a ticket of its run must not start again beside it)."""
        left = self._left_runs
        try:
            gone = await session.gate(
                session.store.engines.forget_silent, left.silent_for, left.spare(session.store)
            )
            await session.gate(left.close, session.store)
        except StoreBusyError:
            return
        except StoreGoneError:
            raise
        except StoreError as exc:  # a store fault: tried again next round
            log.debug("recording silent engines dead delayed: %s", exc)
            return
        for engine in gone:
            log.warning("engine %s on host %s stopped heartbeating: recorded dead",
                        engine["id"], engine["host"])  # fmt: skip

    async def _reap_gone(self, session: EngineSession) -> None:
        """Engines of this host gone since this one started (process gone and silent for
        a lease: at the start's cleanup, one that had just died still had a recent
        heartbeat) are recorded dead, and their VMs of this host reaped."""
        settings, report = self.settings, ReapReport()
        try:
            await session.gate(
                reap_engines, session.store, settings.host_id, report, settings.lease_ttl
            )
            await session.gate(
                reap_vms, session.store, settings.home, settings.host_id, report,
                settings.backend_options, settings.lease_ttl,
            )  # fmt: skip
        except StoreError as exc:  # busy, or a store fault: tried again next round
            log.debug("reaping gone engines delayed: %s", exc)
            return
        if report.engines or report.vms:
            log.warning("engines of this host gone: %s recorded dead, VMs reaped: %s",
                        report.engines, report.vms)  # fmt: skip

    async def _claim(self, session: EngineSession, watcher: Watcher, slots: int) -> list[Claimed]:
        """Claim up to `slots` open tickets in one statement, each with its plan resolved
        and its run started in the same hand-off to the store thread; none when nothing is
        open or the store is busy now.

        Most wake-ups are this engine's own writes: a read off the store thread first
        keeps them from queueing claim statements in front of the running tickets' writes.
        That read is skipped while there is a backlog (the last claim took every ticket it
        asked for): a slot freed then is worth a claim, and the read would cost the loop
        a statement per ticket. Nothing is claimed while a VM's start waits out a shortage
        of the host (`vm/shortage.py`: out of fds, memory or processes)."""
        if shortage.waiting():  # a claimed ticket would only hold more of what is short
            return []
        if not self._backlog and not await watcher.any_open():
            return []
        try:
            claimed = await session.gate(
                session.claim_planned, attempt_id=uuid.uuid4().hex, limit=slots
            )
        except StoreBusyError as exc:
            session.gate.warn(f"claiming delayed (store busy): {exc}")
            return []
        except StoreGoneError:  # (`_store_gone` stops the engine, saying why)
            return []
        self._backlog = len(claimed) >= slots
        return claimed

    async def _claim_loop(self, session: EngineSession, watcher: Watcher) -> None:
        drained = asyncio.create_task(self.draining.wait())
        try:
            while not self.draining.is_set():
                watcher.changed.clear()
                while len(self.slots) < self.max_vms and not self.draining.is_set():
                    tickets = await self._claim(session, watcher, self.max_vms - len(self.slots))
                    for claimed in tickets:
                        self._launch(session, claimed)
                    if not tickets:
                        break
                if self.on_ready is not None:
                    ready, self.on_ready = self.on_ready, None
                    ready()
                if self.until_idle and not self.active and not await self._has_open(session):
                    break
                # with every slot busy only a freed slot matters: store changes (mostly
                # this engine's own writes) are not even looked at until then
                full = len(self.slots) >= self.max_vms
                watcher.wanted = not full
                slot_freed = asyncio.create_task(self._slot_freed.wait())
                waits = {slot_freed, drained}
                changed = None if full else asyncio.create_task(watcher.changed.wait())
                if changed is not None:
                    waits.add(changed)
                await asyncio.wait(
                    waits,
                    timeout=None if full else self.poll_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if changed is not None:
                    changed.cancel()
                slot_freed.cancel()
                self._slot_freed.clear()
        finally:
            drained.cancel()
            if self.active:
                await asyncio.gather(*self.active, return_exceptions=True)

    def _launch(self, session: EngineSession, claimed: Claimed) -> None:
        ticket = claimed[0]
        self.claimed += 1
        log.info(
            "claimed ticket %s (attempt %s)",
            ticket.id,
            ticket.attempts,
            extra={"ticket_id": ticket.id, "engine_id": session.engine_id},
        )
        slot = self.claimed  # a number of this launch's own (a ticket may come back)
        self.slots.add(slot)
        task = asyncio.create_task(self._run_one(session, claimed, lambda: self._free(slot)))
        self.active[task] = ticket.id
        task.add_done_callback(lambda task: self._finished(task, slot))
        if self._stop_requests >= 2:  # claimed as the abort came: aborted like the others,
            asyncio.get_running_loop().call_soon(task.cancel)  # once its run is under way

    def _free(self, slot: int) -> None:
        self.slots.discard(slot)
        self._slot_freed.set()

    def _finished(self, task: asyncio.Task[Any], slot: int) -> None:
        self.active.pop(task, None)
        self._free(slot)

    async def _has_open(self, session: EngineSession) -> bool:
        try:
            return await session.gate(session.store.tickets.any_unfinished)
        except StoreBusyError:
            return True

    async def _run_one(
        self, session: EngineSession, claimed: Claimed, steps_over: Callable[[], None]
    ) -> None:
        ticket, plan, started = claimed
        cut = False
        try:
            final = await session.run_claimed(ticket, steps_over, plan, started)
            if final is not None and session.runner.ended_here(ticket):  # not another's end
                log.info(
                    "ticket %s %s",
                    ticket.id,
                    final.status,
                    extra={"ticket_id": ticket.id, "engine_id": session.engine_id},
                )
        except asyncio.CancelledError:
            cut = True
            log.warning("%s", session.runner.abort_outcome(ticket.id))
        except AttemptEndedError:
            pass  # logged where it ended (one line)
        except StaleAttemptError as exc:
            log.warning("%s", _about(ticket.id, exc))
        except SwarmError as exc:
            log.error("%s", _about(ticket.id, exc))
        except Exception:
            log.exception("ticket %s crashed the runner", ticket.id)
        finally:
            if cut or ticket.id in session.runner.unrecorded:
                self.aborted += 1


def _about(ticket_id: int, exc: BaseException) -> str:
    """`ticket N: <exc>`, without saying `ticket N:` twice when the error already does."""
    text = str(exc)
    return text if text.startswith(f"ticket {ticket_id}:") else f"ticket {ticket_id}: {text}"
