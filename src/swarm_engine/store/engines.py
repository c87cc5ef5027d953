"""The `engines` table: every engine (daemon or `run-ticket --wait`), its host and heartbeat."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from swarm_engine.errors import StoreBusyError, StoreError, StoreIntegrityError
from swarm_engine.store.db import Database
from swarm_engine.store.errortext import not_run
from swarm_engine.store.queries import load
from swarm_engine.store.rows import Ticket, decode_record
from swarm_engine.store.timestamps import parse_timestamp

DEAD_RUN = "its engine stopped heartbeating before it closed the run"
UNOWNED_RUN = (
    "no engine held this run (engine_id NULL) and its ticket was not held under its"
    " attempt: closed by the reaper"
)
Beat = Literal["stamped", "locked", "missing"]
"""What a heartbeat did (`EngineStore.heartbeat`)."""


class EngineStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.q = load(db.dialect, "engines")

    def register(
        self, engine_id: str, *, kind: str, host: str, pid: int, max_vms: int, backend: str
    ) -> None:
        self.db.run(
            self.q.register,
            {"id": engine_id, "kind": kind, "host": host, "pid": pid, "max_vms": max_vms,
             "backend": backend},
        )  # fmt: skip

    def restore(
        self, engine_id: str, *, kind: str, host: str, pid: int, max_vms: int, backend: str
    ) -> bool:
        """Put the engine's row back (as `register` wrote it) if another writer deleted
        it; whether it was missing (False: it is there, nothing written)."""
        done = self.db.run(
            self.q.restore,
            {"id": engine_id, "kind": kind, "host": host, "pid": pid, "max_vms": max_vms,
             "backend": backend},
        )  # fmt: skip
        if done.rowcount > 0:
            return True
        if self.get(engine_id) is None:  # nothing written, nothing there: a trigger's IGNORE
            raise StoreIntegrityError(
                f"engine {engine_id}: the store did not keep its row in engines when it was"
                " written again (a trigger?)"
            )
        return False

    def heartbeat(self, engine_id: str, busy_vms: int, state: str | None = None) -> Beat:
        """Stamp the engine's row: `stamped`; `missing` when there is no such row (deleted
        by another writer: see `restore`); `locked` when another client holds it locked
        (PostgreSQL: passed over, not waited for; stamped at a later round)."""
        args = {"id": engine_id, "busy_vms": busy_vms, "state": state}
        if self.db.run(self.q.heartbeat, args).rowcount > 0:
            return "stamped"
        return "missing" if self.get(engine_id) is None else "locked"

    def short_lock_wait(self) -> None:
        """(In a transaction.) The rest of it waits at most 1.5 s for a row lock another
        client holds, then is busy (PostgreSQL; SQLite has no row locks): for the
        transactions of an engine's lease-critical path, on its one store thread."""
        self.db.run(self.q.lock_wait)

    def stopped(self, engine_id: str, state: str = "stopped") -> None:
        self.db.run(self.q.stopped, {"id": engine_id, "state": state})

    def running(self) -> list[dict[str, Any]]:
        """Engines not stopped, of every host, oldest first. `busy_vms` is live: the VMs
        each one holds now (from the `vms` table), not as of its last heartbeat.

        A row's `id`, `kind`, `host`, `backend` or `state` over `MAX_NAME_BYTES` (1 KiB;
        another client's) is None, named in its `defects` (`engine_columns`): such an
        engine is shown, and never acted on (it cannot be named: it is not recorded dead,
        its runs are not closed, its VMs are not reaped as its)."""
        out = []
        for r in self.db.all(self.q.running):
            record = decode_record(r)
            record["busy_vms"] = record.pop("busy_now")
            out.append(record)
        return out

    def silent(self, seconds: float) -> list[dict[str, Any]]:
        """Running engines (any host) whose last heartbeat is older than `seconds`."""
        return [decode_record(r) for r in self.db.all(self.q.silent, {"seconds": float(seconds)})]

    def forget_silent(
        self, seconds: float, spare: Callable[[dict[str, Any]], bool] | None = None
    ) -> list[dict[str, Any]]:
        """Record as dead the engines (any host) silent for over `seconds` that hold no
        live ticket; returns their `id` and `host`. Runs they left `running` (of tickets
        cancelled and reopened while they ran) are closed failed with them: a ticket is
        never claimed while a run of it is `running`. (Runs of engines recorded stopped
        or dead before: `close_silent_runs`.)

        `spare(engine row)`: True for an engine to leave alone whatever its heartbeat
        says (the caller's own host's engines whose process lives: a frozen engine, whose
        sandbox still runs, is not dead)."""
        args: dict[str, Any] = {"seconds": float(seconds), "only": None}
        if spare is None:
            try:
                gone = self._forget(args)
            except StoreBusyError:
                raise
            except StoreError:  # a row the store will not let change (a trigger, a
                gone = self._forget_each(args, spare)  # constraint): the others one by one
        else:
            gone = self._forget_each(args, spare)
        return gone

    def close_silent_runs(
        self,
        seconds: float,
        spare: Callable[[dict[str, Any]], bool] | None = None,
        ticket_id: int | None = None,
    ) -> list[str]:
        """Close, failed, the runs left `running` by engines recorded stopped or dead (any
        state but running / draining) that have been silent for over `seconds`, with their
        unfinished steps; returns those engines' ids. `ticket_id`: only engines holding a
        run of that ticket (`run-ticket` before its claim). `spare(engine row)`: True for
        an engine to leave alone (on the caller's host, its process alive: a frozen engine
        whose sandbox still runs). A close the store refuses (a trigger, a constraint)
        leaves those runs, and their tickets unclaimed, as the row's writer wants."""
        args = {"seconds": float(seconds), "ticket": ticket_id}
        stopped = [
            str(e["id"])
            for e in map(decode_record, self.db.all(self.q.stopped_with_runs, args))
            if spare is None or not spare(e)
        ]
        if stopped and not self.close_runs_of(stopped):
            return []
        return stopped

    def close_runs_of(self, engine_ids: list[str]) -> bool:
        """Close, failed (`DEAD_RUN`), every run still `running` of these engines, with
        their unfinished steps, in one transaction; False when the store refused it."""
        closed = {"ids": engine_ids, "error": DEAD_RUN, "not_run": not_run(DEAD_RUN)}

        def close() -> None:  # only SQL: run again if rolled back (store/rerun.py)
            self.short_lock_wait()
            self.db.run(self.q.close_dead_steps, closed)
            self.db.run(self.q.close_dead_runs, closed)

        try:
            self.db.atomic(close)
        except StoreBusyError:
            raise
        except StoreError:
            return False
        return True

    def close_unowned_runs(self) -> list[int]:
        """Close, failed (`UNOWNED_RUN`), the runs still `running` that no engine can
        close (`engine_id` NULL: another writer's row, no engine's) and whose ticket is
        not held under their attempt (not `claimed`/`running` with that `attempt_id`),
        with their unfinished steps, at most 1000 a call, in one transaction; returns
        their ids. A run with an `engine_id` is never touched: its
        engine (or, once that is gone, `close_silent_runs`) closes it. A close the store
        refuses (a trigger, a constraint) raises as the store does."""

        def close() -> list[int]:  # only SQL: run again if rolled back (store/rerun.py)
            self.short_lock_wait()
            rows = self.db.all(self.q.close_unowned_runs, {"error": UNOWNED_RUN})
            closed = [r[0] for r in rows if isinstance(r[0], int)]  # (the primary key)
            if closed:
                args = {"ids": closed, "error": UNOWNED_RUN, "not_run": not_run(UNOWNED_RUN)}
                self.db.run(self.q.close_unowned_steps, args)
            return closed

        return self.db.atomic(close)

    def running_vm_ids(self, engine_ids: list[str]) -> set[str]:
        """The VM ids of the steps of these engines' runs still `running` (at most
        10,000)."""
        rows = self.db.all(self.q.running_vm_ids, {"ids": engine_ids})
        return {r[0] for r in rows if isinstance(r[0], str)}

    def runs_without_engine(self) -> dict[str, list[tuple[str | None, int]]]:
        """Engines that hold a run still `running` but have no row in `engines` (another
        writer deleted it; SQLite only: PostgreSQL's foreign key keeps it), each with
        the `(host, owner_pid)` of the VMs its runs' steps used (who ran them; a host over
        `MAX_NAME_BYTES` is None: not read, and no caller's). An
        engine that lives puts its row back within a heartbeat (`restore`)."""
        found: dict[str, list[tuple[str | None, int]]] = {}
        for r in self.db.all(self.q.runs_without_engine):
            vms = found.setdefault(str(r[0]), [])
            if r[1] is not None and isinstance(r[2], int):
                vms.append((str(r[1]), r[2]))
            elif isinstance(r[3], int) and isinstance(r[2], int):  # a host over 1 KiB: None,
                vms.append((None, r[2]))  # on no host the caller is (not read)
        return found

    def _forget_each(
        self, args: dict[str, Any], spare: Callable[[dict[str, Any]], bool] | None
    ) -> list[dict[str, Any]]:
        gone: list[dict[str, Any]] = []
        for engine in self.silent(float(args["seconds"])):
            if engine["id"] is None or (spare is not None and spare(engine)):
                continue  # (an id over its cap is not read: such a row is left as it is)
            try:
                gone += self._forget({**args, "only": str(engine["id"])})
            except StoreBusyError:
                raise
            except StoreError:
                continue
        return gone

    def _forget(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        def forget() -> list[dict[str, Any]]:  # only SQL: run again if rolled back (rerun.py)
            self.short_lock_wait()
            gone = [decode_record(r) for r in self.db.all(self.q.forget_silent, args)]
            if gone:
                closed = {
                    "ids": [str(e["id"]) for e in gone],
                    "error": DEAD_RUN,
                    "not_run": not_run(DEAD_RUN),
                }
                self.db.run(self.q.close_dead_steps, closed)
                self.db.run(self.q.close_dead_runs, closed)
            return gone

        return self.db.atomic(forget)

    def gone_from(
        self, host: str, alive: Callable[[Any], bool], silent_for: float
    ) -> list[dict[str, Any]]:
        """Running engines of `host` that are gone: their process is gone (`alive(pid)`
        false) AND their last heartbeat is older than `silent_for` seconds. A row's pid is
        any writer's, and an engine in another pid namespace has a pid this host does not
        show: while it heartbeats, it lives."""
        return [e for e in self.silent(silent_for) if e["host"] == host and not alive(e["pid"])]

    def gone_unreaped(
        self, host: str, alive: Callable[[Any], bool], silent_for: float
    ) -> list[dict[str, Any]]:
        """Running engines of `host` whose process is gone (`alive(pid)` false) but whose
        last heartbeat is not yet `silent_for` seconds old: `gone_from` takes them once it
        is (a pid alone is not trusted). Each with `reaped_in`, the whole seconds until
        then (by this host's clock; an unreadable heartbeat: 0)."""
        silent = {e["id"] for e in self.silent(silent_for)}
        out = []
        for engine in self.running():
            if engine["host"] != host or engine["id"] is None or engine["id"] in silent:
                continue
            if alive(engine["pid"]):
                continue
            try:
                beat = parse_timestamp(engine.get("heartbeat_at"))
            except ValueError:
                beat = None
            left = 0.0
            if beat is not None:
                left = silent_for - (datetime.now(UTC) - beat).total_seconds()
            engine["reaped_in"] = max(0, math.ceil(min(left, silent_for)))
            out.append(engine)
        return out

    def heartbeating(self, silent_for: float) -> set[str]:
        """Ids of the running engines (any host) that heartbeat within `silent_for` s."""
        silent = {str(e["id"]) for e in self.silent(silent_for) if e["id"] is not None}
        return {str(e["id"]) for e in self.running() if e["id"] is not None} - silent

    def hosts(self) -> list[dict[str, Any]]:
        """Per host with a live engine or VM: `host`, `engines`, `slots` (their max_vms
        summed), `vms` (live VMs recorded on that host)."""
        return [decode_record(r) for r in self.db.all(self.q.hosts)]

    def gone(self) -> set[str]:
        """Ids of engines recorded as stopped or dead."""
        return {str(r[0]) for r in self.db.all(self.q.gone)}

    def get(self, engine_id: object) -> dict[str, Any] | None:
        """The engine row `engine_id` (any value a ticket row names), or None."""
        if not isinstance(engine_id, str):
            return None
        row = self.db.one(self.q.get, {"id": engine_id})
        return decode_record(row) if row else None

    def find_running(self, pid: int, host: str) -> str | None:
        """The id of the running engine with this pid on this host, if any."""
        row = self.db.one(self.q.find_running, {"pid": pid, "host": host})
        return str(row[0]) if row else None


def holder(
    ticket: Ticket,
    engine: Mapping[str, Any] | None,
    *,
    host: str,
    alive: Callable[[Any], bool],
    now: datetime | None = None,
) -> str:
    """Who holds a `claimed`/`running` ticket, for one line: `engine X` while it runs;
    when it does not (its row is missing or says stopped or dead, or, on this `host`, its
    process is gone by `alive(pid)`) or the lease ran out, also what becomes of the
    ticket: `engine X, which is not running (...); it will be re-queued when its lease
    expires (in 12s), by any running engine or 'swarm-engine cleanup'`. `engine`: the
    row of `ticket.engine_id` (`EngineStore.get`)."""
    name = f"engine {ticket.engine_id}" if ticket.engine_id else "no engine"
    why: str | None = None
    if engine is None:
        why = "which is not running (no such engine is recorded)"
    elif engine.get("state") in ("stopped", "dead"):
        why = f"which is not running (recorded {engine['state']})"
    elif engine.get("host") == host and not alive(engine.get("pid")):
        why = f"which is not running (its process {engine.get('pid')} on this host is gone)"
    now = now or datetime.now(UTC)
    expires = ticket.lease_expires_at
    left = None if expires is None else (expires - now).total_seconds()
    if why is None and left is not None and left > 0:
        return name
    if why is None:
        why = "whose lease on it ran out"
    if left is not None and left > 0:
        return (
            f"{name}, {why}; it will be re-queued when its lease expires (in"
            f" {math.ceil(left)}s), by any running engine or 'swarm-engine cleanup'"
        )
    return (
        f"{name}, {why}; its lease has expired: any running engine re-queues it at its"
        " next heartbeat, 'swarm-engine cleanup' at once"
    )
