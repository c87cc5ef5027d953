"""Cron triggers: every engine evaluates them, and each slot makes exactly one ticket.

A workflow's trigger with `cron: "*/5 * * * *"` (UTC; a sixth field is seconds) fires at
each slot of its schedule. Every daemon looks about once a second (sooner when a slot is
nearer) at the latest slot of every cron trigger of every workflow's latest version, and
asks the store to fire it (`TriggerStore.fire`): the firing's primary key (trigger, slot
time) lets exactly one engine make the ticket, across engines, hosts and restarts.

Only the latest slot is fired, and only within `GRACE_SECONDS` after its time, never one
from before the workflow was registered: when every engine was down for a while, missed
slots are skipped, not made up in a burst.

A schedule may cost croniter milliseconds (`0 0 29 2 1#5`), and the event loop also renews
leases: the slots around now of each distinct schedule are computed off the loop
(`asyncio.to_thread`) and kept until the next slot passes, so a tick only compares times.
A workflow has at most `models.MAX_TRIGGERS` triggers; a registry row with more does not
decode, and this task says so in one warning line.

Every `SCHEDULES_EVERY` seconds, and before a slot fires, one small query
(`workflows_seen`: SQLite's `data_version`, PostgreSQL's rows' count, newest `created_at`
and transaction ids; no row read) tells whether the registry changed since it was last
read; only then is it read again (`registry/schedules.py`): the latest version of each
workflow, one row at a time, a spec handed over only when it may declare triggers, at
most `SCAN_ROWS` rows and `SCAN_BYTES` bytes of specs per round, the rest the next round
(the schedules read before stay until the pass ends; one warning line when a pass takes
more than one round). A deleted or changed definition does not fire at its next slot once
a pass has read it. A cron trigger's name declared by more than one workflow (a row any
client may write: registry/triggers.py) fires for none of them, with one warning line per
change.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from swarm_engine.engine.gate import StoreGate
from swarm_engine.errors import StoreBusyError, SwarmError
from swarm_engine.models import TriggerSpec, WorkflowSpec
from swarm_engine.registry import Registry
from swarm_engine.registry.schedules import Kept, ScheduleScan
from swarm_engine.registry.triggers import ambiguity, trigger_owners
from swarm_engine.store import Store
from swarm_engine.store.timestamps import parse_timestamp

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
GRACE_SECONDS = 60.0
SCHEDULES_EVERY = 10.0
"""Seconds between looks at whether the registry changed (then it is read again)."""
SCAN_ROWS = 10_000
"""Registry rows (their keys) a round of a pass reads at most."""
SCAN_BYTES = 64 * 2**20
"""Bytes of specs (checked in SQL or read) a round of a pass measures at most (about: a
row is read whole or not at all, and a spec holds at most 8 MiB)."""


def slot_key(slot: datetime) -> str:
    """A slot as stored in `trigger_firings.key`: UTC ISO-8601 to the second."""
    return slot.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def latest_slot(cron: str, now: datetime) -> datetime:
    """The latest slot of `cron` at or before `now` (UTC)."""
    from croniter import croniter  # imported by the first cron trigger: engine start-up

    it = croniter(cron, now + timedelta(microseconds=1))
    slot: datetime = it.get_prev(datetime)
    return slot.astimezone(UTC)


def next_slot(cron: str, now: datetime) -> datetime:
    """The first slot of `cron` after `now` (UTC)."""
    from croniter import croniter  # (see latest_slot)

    slot: datetime = croniter(cron, now).get_next(datetime)
    return slot.astimezone(UTC)


Bounds = tuple[datetime, datetime] | str
"""A schedule's (latest slot <= now, next slot > now), or why it cannot be computed."""


def slot_bounds(crons: list[str], now: datetime) -> dict[str, Bounds]:
    """For each schedule, its slots around `now` (see `Bounds`). CPU-bound, milliseconds
    per costly schedule: run off the event loop. A schedule that breaks (an untrusted row)
    gets its error's text, alone."""
    out: dict[str, Bounds] = {}
    for cron in crons:
        try:
            out[cron] = (latest_slot(cron, now), next_slot(cron, now))
        except (ValueError, KeyError, ArithmeticError) as exc:
            out[cron] = str(exc) or type(exc).__name__
    return out


class CronFirer:
    """The side task of a daemon that fires cron triggers (see the module doc)."""

    def __init__(self, store: Store, registry: Registry, gate: StoreGate) -> None:
        self.store = store
        self.registry = registry
        self.gate = gate
        self.fired = 0
        self._schedules: list[tuple[WorkflowSpec, TriggerSpec, datetime]] = []
        self._read_at = -SCHEDULES_EVERY
        self._slots: dict[str, Bounds] = {}
        """schedule -> its slots around now (`slot_bounds`), kept until the next one."""
        self._seen: object = None
        """The registry's `workflows_seen` when the last whole pass began."""
        self._scan: ScheduleScan | None = None
        """A pass over the registry under way (more than one round: `SCAN_ROWS`...)."""
        self._quiet: dict[tuple[bytes, bytes], str] = {}
        """The last pass's rows without triggers (`ScheduleScan.quiet`)."""
        self._kept: dict[tuple[bytes, bytes], Kept] = {}
        """What the last pass found of each row declaring triggers (`ScheduleScan.kept`):
        read and decoded again only once it changed."""
        self._cut_warned = False
        """Whether a pass longer than one round was told (once, until one is not)."""
        self._ambiguous: dict[str, str] = {}
        """trigger name declared by more than one workflow -> the line warned about it
        (registry/triggers.py): such a name fires for none of them."""
        self._warned: set[tuple[str, str]] = set()
        """(workflow, what was wrong) already warned about: a bad row is told once."""

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if loop.time() - self._read_at >= SCHEDULES_EVERY:
                await self._read_schedules()
                self._read_at = loop.time()
            now = datetime.now(UTC)
            await self._refresh_slots(now)
            due = self._due(now)
            if due and await self._registry_changed():  # deleted or changed: not fired
                await self._read_schedules()
                self._read_at = loop.time()
                await self._refresh_slots(now)
                due = self._due(now)
            for workflow, trigger, slot in due:
                await self._fire(workflow, trigger, slot)
            await asyncio.sleep(self._until_next(datetime.now(UTC)))

    def _due(self, now: datetime) -> list[tuple[WorkflowSpec, TriggerSpec, datetime]]:
        """The cron triggers whose latest slot is to fire now (within its grace period,
        not from before its workflow was registered)."""
        due = []
        for workflow, trigger, registered in self._schedules:
            assert trigger.cron is not None
            bounds = self._slots.get(trigger.cron)
            if not isinstance(bounds, tuple):
                continue  # broken (told once by _refresh_slots), or read since
            slot = bounds[0]
            if slot < registered or (now - slot).total_seconds() > GRACE_SECONDS:
                continue
            due.append((workflow, trigger, slot))
        return due

    async def _registry_changed(self) -> bool:
        """Whether the registry changed since the last pass began (`workflows_seen`: one
        small query, made only when a slot is due), so that a deleted or changed
        definition does not fire at its next slot."""
        try:
            seen = await self.gate(self.registry.defs.workflows_seen)
        except (StoreBusyError, SwarmError):
            return False  # (the next read says so when it fails too)
        return seen != self._seen

    async def _refresh_slots(self, now: datetime) -> None:
        """Compute, off the loop, the slots of each schedule never computed or whose next
        slot has come (`slot_bounds`); a schedule that breaks is warned about once."""
        stale = sorted(
            {
                cron
                for _, t, _ in self._schedules
                if (cron := t.cron) is not None
                and ((b := self._slots.get(cron)) is None or (isinstance(b, tuple) and b[1] <= now))
            }
        )
        if not stale:
            return
        fresh = await asyncio.to_thread(slot_bounds, stale, now)
        for cron, bounds in fresh.items():
            if isinstance(bounds, str):
                names = ", ".join(t.name for _, t, _ in self._schedules if t.cron == cron)
                log.warning("cron trigger %s: schedule %r: %s", names, cron, bounds)
        self._slots.update(fresh)

    async def _read_schedules(self) -> None:
        """One round: when the registry changed since the last pass (or a pass is under
        way), read on (`ScheduleScan.step`); at a pass's end, its schedules replace the
        last ones."""
        try:
            if self._scan is None:
                seen = await self.gate(self.registry.defs.workflows_seen)
                if seen == self._seen:
                    return  # unchanged: nothing read
                self._scan = ScheduleScan(self.registry, seen, self._quiet, self._kept)
            done = await self.gate(self._scan.step, SCAN_ROWS, SCAN_BYTES)
        except (StoreBusyError, SwarmError) as exc:
            log.warning("cron triggers: the registry cannot be read now: %s", exc)
            self._scan = None  # (read again from the start next round)
            return
        scan = self._scan
        if not done:
            if not self._cut_warned:
                self._cut_warned = True
                log.warning(
                    "cron triggers: the registry is read in parts (at most %d rows and %g MiB"
                    " of specs every %g s): new or changed schedules are seen late",
                    SCAN_ROWS, round(SCAN_BYTES / 2**20, 1), SCHEDULES_EVERY,
                )  # fmt: skip
            return
        self._scan = None
        if scan.steps == 1:
            self._cut_warned = False
        self._seen = scan.marker
        self._quiet = scan.quiet
        self._kept = scan.kept
        skipped, latest = scan.skipped, scan.found
        for problem in skipped:  # e.g. more than MAX_TRIGGERS triggers: told once
            if ("", problem) not in self._warned:
                self._warned.add(("", problem))
                log.warning("%s: its triggers are skipped", problem)
        # a cron trigger's name declared by more than one workflow (rows any client may
        # write) fires for none of them: told once per change, not once per re-read
        owners = trigger_owners(w for w, _ in latest)
        cron_names = {t.name for w, _ in latest for t in w.triggers if t.cron}
        ambiguous = {
            name: line for name in cron_names if (line := ambiguity(name, owners[name])) is not None
        }
        for name, line in sorted(ambiguous.items()):
            if self._ambiguous.get(name) != line:
                log.warning("cron triggers: %s", line)
        self._ambiguous = ambiguous  # (bounded by the registry's trigger names)
        schedules = []
        for workflow, created_at in latest:
            crons = [t for t in workflow.triggers if t.cron and t.name not in ambiguous]
            if not crons:
                continue
            try:  # a row is untrusted: one that cannot say when it was made fires nothing
                registered = parse_timestamp(created_at)
                if registered is None:
                    raise ValueError("empty")
            except ValueError as exc:
                self._warn_once(workflow, f"created_at is not a timestamp ({exc})")
                continue
            schedules += [(workflow, t, registered) for t in crons]
        self._schedules = schedules
        crons_now = {t.cron for _, t, _ in schedules}
        self._slots = {c: b for c, b in self._slots.items() if c in crons_now}

    def _warn_once(self, workflow: WorkflowSpec, problem: str) -> None:
        """One warning line per workflow and problem, not one per re-read."""
        if (workflow.ref, problem) in self._warned:
            return
        self._warned.add((workflow.ref, problem))
        names = ", ".join(t.name for t in workflow.triggers if t.cron)
        log.warning(
            "workflow %s in the registry: %s: its cron triggers (%s) are skipped",
            workflow.ref, problem, names,
        )  # fmt: skip

    async def _fire(self, workflow: WorkflowSpec, trigger: TriggerSpec, slot: datetime) -> None:
        key = slot_key(slot)
        try:
            ticket_id, made = await self.gate(
                self.store.triggers.fire,
                trigger.name,
                key,
                workflow_id=workflow.ref,
                title=f"{trigger.name} {key}",
                inputs=trigger.inputs,
                priority=trigger.priority,
            )
        except StoreBusyError:
            return  # the next tick tries again (the slot stays within its grace period)
        except SwarmError as exc:
            log.warning("cron trigger %s could not fire for %s: %s", trigger.name, key, exc)
            return
        if made:
            self.fired += 1
            log.info("cron trigger %s fired for %s: ticket %s", trigger.name, key, ticket_id)

    def _until_next(self, now: datetime) -> float:
        """Seconds to sleep: until the nearest next slot, at most `TICK_SECONDS` (from the
        slots already computed: no croniter call)."""
        wait = TICK_SECONDS
        for bounds in self._slots.values():
            if isinstance(bounds, tuple):
                wait = min(wait, max(0.01, (bounds[1] - now).total_seconds() + 0.005))
        return wait
