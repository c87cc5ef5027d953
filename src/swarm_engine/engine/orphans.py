"""Runs left `running` by engines that are gone, and when another engine may close them.

A ticket is never claimed while a run of it is `running` and held by an engine (the claim
guard in the store). Its engine closes the run once its sandbox has stopped; when that
engine is gone, someone else must, and only when it is truly gone: a frozen engine's
sandbox still runs, and closing its run would let the ticket run beside it. The `engines`
table is any writer's, so its `state` alone proves nothing. The rule, the same for a
daemon's rounds and for `run-ticket` before its claim:

* the engine's row says it is not running (stopped, dead, anything else) and its last
  heartbeat is older than two leases; or its row is gone and this closer has seen it gone
  for two leases (an engine that lives writes its row back within a heartbeat);
* and on the closer's own host its process is not alive (the row's `pid`; for a row that
  is gone, the engine pid recorded with the run's VMs), and no process of this host
  carries the tag of a VM of its running runs' steps (`SWARM_VM_ID`: a sandbox's command
  or helper still runs, whatever any row says of its engine). When every VM of a gone
  row's runs was on this host and neither their engine process nor any tagged process
  lives, the engine is gone for certain and its runs are closed at once.

Across hosts a frozen engine cannot be told from a dead one: after two leases it counts
as dead (docs/engine.md).

A run that names no engine (`engine_id` NULL: no engine made it, another writer did) has
no one to close it: it is closed failed at once, unless its ticket is held under its
attempt (`claimed`/`running` with its `attempt_id`: that ticket's lease settles it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from swarm_engine.errors import StoreBusyError, StoreError, StoreGoneError
from swarm_engine.store import Store
from swarm_engine.store.engines import UNOWNED_RUN
from swarm_engine.vm.proctree import pid_alive, tagged_ids

log = logging.getLogger(__name__)


class LeftRuns:
    """What one closer (a daemon, a `run-ticket`) knows of engines that left runs
    `running`: `host` is its own host id, `lease_ttl` the lease in seconds. Its methods
    are called on the thread that owns the store; `clock` is monotonic seconds, `alive`
    tells whether a pid lives here and `tagged` which VM ids' tags processes here carry."""

    def __init__(
        self,
        host: str,
        lease_ttl: float,
        *,
        alive: Callable[[Any], bool] = pid_alive,
        clock: Callable[[], float] = time.monotonic,
        tagged: Callable[[set[str]], set[str]] = tagged_ids,
    ) -> None:
        self.host = host
        self.tagged = tagged
        self.silent_for = 2 * float(lease_ttl)
        self.alive = alive
        self.clock = clock
        self.unowned_refused = False
        """Whether the last close of the runs no engine holds was refused (said once)."""
        self.missing_since: dict[str, float] = {}
        """Engines named by `running` runs whose row is gone: when this closer first saw
        that (kept to the engines still missing at the last look)."""

    def alive_here(self, engine: dict[str, Any]) -> bool:
        """Whether an engine row names this host and a live process."""
        return engine.get("host") == self.host and self.alive(engine.get("pid", 0))

    def spare(self, store: Store) -> Callable[[dict[str, Any]], bool]:
        """The test of an engine row that keeps its runs open (`forget_silent`,
        `close_silent_runs`): its process lives on this host, or a sandbox of its running
        runs still runs here (found by its tag, not by any row's pid)."""

        def spared(engine: dict[str, Any]) -> bool:
            if self.alive_here(engine):
                return True
            return isinstance(engine.get("id"), str) and self.sandbox_here(store, engine["id"])

        return spared

    def sandbox_here(self, store: Store, engine_id: str) -> bool:
        """Whether a process of this host carries the tag of a VM of this engine's
        running runs."""
        return bool(self.tagged(store.engines.running_vm_ids([engine_id])))

    def close_unowned(self, store: Store) -> None:
        """Close the runs no engine can close (`EngineStore.close_unowned_runs`: no
        `engine_id`, their ticket not held under their attempt), saying so in one line;
        a close the store refuses is said once, and left to the next round."""
        try:
            runs = store.engines.close_unowned_runs()
        except (StoreBusyError, StoreGoneError):
            raise
        except StoreError as exc:
            if not self.unowned_refused:
                self.unowned_refused = True
                log.warning("runs that no engine holds left running: the store refused to"
                            " close them (%s)", exc)  # fmt: skip
            return
        self.unowned_refused = False
        if runs:
            log.warning("runs %s closed failed: %s", runs, UNOWNED_RUN)

    def close(self, store: Store, ticket_id: int | None = None) -> list[str]:
        """Close the runs of engines that are gone by the rule above; returns the ids of
        the engines whose runs were closed. `ticket_id`: of the engines with a row, only
        those holding a run of that ticket. Raises what the store raises (busy, gone);
        a close the store refuses leaves the runs as they are."""
        self.close_unowned(store)
        closed = store.engines.close_silent_runs(self.silent_for, self.spare(store), ticket_id)
        missing = store.engines.runs_without_engine()
        now = self.clock()
        self.missing_since = {e: self.missing_since.get(e, now) for e in missing}
        gone = []
        for engine_id, vms in missing.items():
            here = [pid for host, pid in vms if host == self.host]
            if any(self.alive(pid) for pid in here) or self.sandbox_here(store, engine_id):
                self.missing_since[engine_id] = now  # alive: its row comes back
                continue
            certain = bool(vms) and len(here) == len(vms)
            if certain or now - self.missing_since[engine_id] >= self.silent_for:
                gone.append(engine_id)
        if gone and store.engines.close_runs_of(gone):
            for engine_id in gone:
                self.missing_since.pop(engine_id, None)
            closed += gone
        return closed
