"""The ticket store: tickets, execution records, VMs and engines in one SQLite file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from swarm_engine.store.db import Database
from swarm_engine.store.engines import EngineStore
from swarm_engine.store.rows import Ticket
from swarm_engine.store.runs import RunStore
from swarm_engine.store.sqlite import BUSY_TIMEOUT_MS, connect
from swarm_engine.store.tickets import TicketStore
from swarm_engine.store.vms import VMStore


@dataclass
class Store:
    db: Database
    tickets: TicketStore
    runs: RunStore
    vms: VMStore
    engines: EngineStore

    def close(self) -> None:
        self.db.close()


def open_store(path: Path, *, busy_timeout: float = BUSY_TIMEOUT_MS / 1000) -> Store:
    """Open the ticket store (creating and migrating it). Raises `StoreError`."""
    db = connect(path, "tickets", busy_timeout=busy_timeout)
    return Store(db, TicketStore(db), RunStore(db), VMStore(db), EngineStore(db))


__all__ = ["Store", "Ticket", "open_store"]
