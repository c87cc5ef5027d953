"""uvicorn's HTTP/1.1 protocol (h11), with one addition: each request's scope carries a way
to drop its connection at once (`deps.ABORT_EXTENSION`). A plain close waits until the
client has taken every byte still buffered, which a client that stopped reading never
does; a live log stream whose client stalled drops it instead (`api/logs.py`).

Imported only by `server.serve`, with uvicorn (whose version `constraints.txt` pins: this
leans on `H11Protocol.handle_events` making `self.cycle` for each request).
"""

from __future__ import annotations

from uvicorn.protocols.http.h11_impl import H11Protocol

from swarm_engine.api.deps import ABORT_EXTENSION


class AbortableH11Protocol(H11Protocol):
    def handle_events(self) -> None:
        super().handle_events()
        # a new request's handler task is made here, but runs only after this returns
        if self.cycle is not None:
            extensions = self.cycle.scope.setdefault("extensions", {})
            extensions[ABORT_EXTENSION] = {"abort": self.transport.abort}
