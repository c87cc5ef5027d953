"""What every request handler gets: the server's settings, and a store and a registry to
use until it has answered (borrowed from the server's pools, `api/pools.py`)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import Depends, Request

from swarm_engine.api.pools import Pool
from swarm_engine.config import Settings
from swarm_engine.errors import StoreError
from swarm_engine.registry import Registry
from swarm_engine.service.metrics import StatusCounts, Tally
from swarm_engine.store import Store, is_url, open_store
from swarm_engine.store.dbfile import Identity, file_identity, name_moved

log = logging.getLogger(__name__)

MAX_LOG_STREAMS = 128
"""Live log streams (`GET /v1/tickets/{id}/logs/stream`) one server serves at once; one
more is answered 503 with `Retry-After` (each open stream looks at the store about once a
second even when idle)."""

MAX_LOG_DOWNLOADS = 32
"""Log downloads (`GET /v1/tickets/{id}/logs`) one server sends at once; one more is
answered 503 with `Retry-After` (each holds a worker thread's reads and one batch of log
while it is sent)."""

ABORT_EXTENSION = "swarm.abort"
"""The ASGI scope extension (`scope["extensions"]`) through which a handler may drop its
connection at once, `{"abort": callable, "gone": callable}` (`api.protocol` adds it;
other servers do not). `gone()` is True once the connection is closing: the client hung
up (a write to it failed) even before the server has told the app (`http.disconnect`),
which it does only at the event loop's next turn."""


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
    downloads: Slots = field(default_factory=lambda: Slots(MAX_LOG_DOWNLOADS))
    stalled_streams: int = 0
    """Log streams whose client stopped reading, disconnected (`stream_stall_timeout`)."""
    gone: str | None = None
    """Why the server stopped serving: its SQLite store's or registry's file was deleted
    or replaced while it served it (see `check_file`); None while it serves."""
    stopping: bool = False
    """Set when the server starts to stop (`serve`, on SIGTERM or Ctrl-C, `stop`): open
    log streams then end their response, so the server need not cancel them."""
    stop_by: float = math.inf
    """Once stopping, when (`anyio.current_time()`) every log response must have ended:
    one still going then (a download, or a stream whose client stopped reading) is
    dropped (`api/logs.py`)."""
    sends: set[anyio.CancelScope] = field(default_factory=set)
    """The deadlines of the log responses' sends under way (`api/logs.py`): a send that
    waits on a client that stopped reading ends at `stop_by` at the latest."""
    on_gone: Callable[[str], None] = lambda why: None
    """Called once, with `gone`, when that is seen (`serve` stops the server)."""
    _watched: dict[str, tuple[Path, Identity | None]] = field(default_factory=dict)
    """The SQLite files served, by what they are to users (`store`, `registry`): each
    name, and the file it named when opened (None: not made yet)."""

    @classmethod
    def open(cls, settings: Settings) -> Server:
        target = settings.tickets_target

        def store() -> Store:
            # a lock wait given up once the stop's time is up (`past_stop`; `made`: by
            # the time one is opened)
            return open_store(target, busy_timeout=settings.busy_timeout, give_up=made.past_stop)

        def registry() -> Registry:
            opened = Registry(
                settings.registry_target, settings.packages_dir,
                busy_timeout=settings.busy_timeout,
            )  # fmt: skip
            opened.defs.db.give_up_when(made.past_stop)
            return opened

        registry_target = settings.registry_target
        stores: Pool[Store] = Pool(store, Store.close, shared=is_url(target))
        registries: Pool[Registry] = Pool(registry, Registry.close, shared=is_url(registry_target))
        made = cls(settings, stores, registries)
        for what, path, pool in (
            ("store", target, stores),
            ("registry", registry_target, registries),
        ):
            if isinstance(path, Path):
                made._watched[what] = (path, file_identity(path))
                pool.check = made.check_file
        return made

    def stop(self, drain: float) -> None:
        """The server starts to stop (on its event loop): the log responses still open
        get `drain` seconds more to end (`stop_by`), a send waiting on its client too."""
        self.stop_by = anyio.current_time() + drain
        self.stopping = True
        for scope in list(self.sends):
            scope.deadline = min(scope.deadline, self.stop_by)

    def past_stop(self) -> bool:
        """The server stops and `stop_by` has passed: a request's store call still waiting
        for a lock another client holds then gives up (`Database.give_up_when`; a 503, or
        a log response dropped), for its worker thread cannot be cancelled and would hold
        the stop for as long as the busy timeout. Called from any thread (`stop_by` is on
        the event loop's clock, `time.monotonic`)."""
        return self.stopping and time.monotonic() >= self.stop_by

    def check_file(self) -> None:
        """Raise `StoreError` (503) once the SQLite store's or the registry's name no
        longer names the file the server opened (deleted, or replaced by `mv`): its open
        handles would go on in a file no one else sees, and a new one would make an empty
        store or registry. The first time, the server is stopped (`on_gone`). A `stat` per
        file and request."""
        if self.gone is None:
            for what, (path, opened) in list(self._watched.items()):
                if opened is None:  # not made yet: the file the first open makes is watched
                    self._watched[what] = (path, file_identity(path))
                    continue
                why = name_moved(path, opened)
                if why is None:
                    continue
                self.gone = f"the {what} {path} was {why} while in use"
                log.error("%s; stopping the server", self.gone)
                self.on_gone(self.gone)
                break
        if self.gone is not None:
            raise StoreError(self.gone)

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
