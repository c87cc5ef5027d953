"""What every request handler gets: the server's settings, and a store and a registry to
use until it has answered (borrowed from the server's pools, `api/pools.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from swarm_engine.api.pools import Pool
from swarm_engine.config import Settings
from swarm_engine.registry import Registry
from swarm_engine.service.metrics import StatusCounts, Tally
from swarm_engine.store import Store, is_url, open_store

MAX_LOG_STREAMS = 128
"""Live log streams (`GET /v1/tickets/{id}/logs/stream`) one server serves at once; one
more is answered 503 with `Retry-After` (each open stream looks at the store about once a
second even when idle)."""


@dataclass
class Slots:
    """At most `limit` of something at once. Used from the event loop only: no lock."""

    limit: int
    taken: int = 0

    def take(self) -> bool:
        """Take a slot: False (and nothing taken) when all `limit` are."""
        if self.taken >= self.limit:
            return False
        self.taken += 1
        return True

    def give_back(self) -> None:
        self.taken = max(0, self.taken - 1)


@dataclass
class Server:
    """A running API's state: its settings, pools, and the metrics it keeps."""

    settings: Settings
    stores: Pool[Store]
    registries: Pool[Registry]
    tally: Tally = field(default_factory=Tally)
    counts: StatusCounts = field(default_factory=StatusCounts)
    streams: Slots = field(default_factory=lambda: Slots(MAX_LOG_STREAMS))

    @classmethod
    def open(cls, settings: Settings) -> Server:
        def store() -> Store:
            return open_store(settings.tickets_target, busy_timeout=settings.busy_timeout)

        def registry() -> Registry:
            return Registry(
                settings.registry_target, settings.packages_dir,
                busy_timeout=settings.busy_timeout,
            )  # fmt: skip

        return cls(
            settings,
            Pool(store, Store.close, shared=is_url(settings.tickets_target)),
            Pool(registry, Registry.close, shared=is_url(settings.registry_target)),
        )

    def close(self) -> None:
        self.stores.close()
        self.registries.close()


def server(request: Request) -> Server:
    state: Server = request.app.state.server
    return state


def _store(request: Request) -> Iterator[Store]:
    with server(request).stores.borrow() as store:
        yield store


def _registry(request: Request) -> Iterator[Registry]:
    with server(request).registries.borrow() as registry:
        yield registry


StoreDep = Annotated[Store, Depends(_store)]
RegistryDep = Annotated[Registry, Depends(_registry)]
ServerDep = Annotated[Server, Depends(server)]
