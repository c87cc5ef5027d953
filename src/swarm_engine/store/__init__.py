"""The ticket store: tickets, execution records, VMs and engines in one SQLite file."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from swarm_engine.store.engines import EngineStore
from swarm_engine.store.runs import RunStore
from swarm_engine.store.sqlite import connect
from swarm_engine.store.tickets import TicketStore
from swarm_engine.store.vms import VMStore


@dataclass
class Store:
    conn: sqlite3.Connection
    tickets: TicketStore
    runs: RunStore
    vms: VMStore
    engines: EngineStore

    def close(self) -> None:
        self.conn.close()


def open_store(path: Path) -> Store:
    conn = connect(path, "tickets")
    return Store(conn, TicketStore(conn), RunStore(conn), VMStore(conn), EngineStore(conn))


__all__ = ["Store", "open_store"]
