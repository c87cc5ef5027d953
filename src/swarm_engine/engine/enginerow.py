"""This engine's row in `engines`: written at its start, put back whenever it is seen gone.

The row is any writer's: another client may delete it while the engine runs. The engine
never looks for it on its hot path; it sees it gone where the store says so, in the call
that found out, on the store thread: its heartbeat touches no row (`LeaseKeeper`), or a
write that names the engine (a run's start, a VM's boot) is refused, as the foreign key
to `engines` refuses it. The row is then put back with the same id (as registered), and
a refused write is made once more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from swarm_engine.errors import (
    EngineRowLostError,
    StoreBusyError,
    StoreError,
    StoreGoneError,
    StoreIntegrityError,
)
from swarm_engine.store import Store

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class EngineRow:
    """Registers the engine and puts its row back; every method runs on the store thread."""

    def __init__(
        self,
        store: Store,
        engine_id: str,
        *,
        kind: str,
        host: str,
        pid: int,
        max_vms: int,
        backend: str,
    ) -> None:
        self.store = store
        self.engine_id = engine_id
        self.kind = kind
        self.host = host
        self.pid = pid
        self.max_vms = max_vms
        self.backend = backend
        self.registered = False
        self.restored = 0
        """How many times the row was put back."""

    def register(self) -> None:
        self.store.engines.register(
            self.engine_id, kind=self.kind, host=self.host, pid=self.pid,
            max_vms=self.max_vms, backend=self.backend,
        )  # fmt: skip
        self.registered = True

    def restore(self) -> bool:
        """Put the row back if it is gone (one statement); whether it was gone (counted
        and logged). Nothing before `register` (`run-ticket` registers as it claims)."""
        back = self.put_back()
        if back:
            self.note_put_back()
        return back

    def put_back(self) -> bool:
        """`restore`'s statement alone (neither counted nor logged): for a transaction
        that may be run again (the lease renewal's), which tells `note_put_back` once it
        committed."""
        if not self.registered:
            return False
        return self.store.engines.restore(
            self.engine_id, kind=self.kind, host=self.host, pid=self.pid,
            max_vms=self.max_vms, backend=self.backend,
        )  # fmt: skip

    def note_put_back(self) -> None:
        """Count and log a row put back (`put_back`, committed)."""
        self.restored += 1
        log.warning(
            "engine %s: its row in engines was deleted by another writer; put back",
            self.engine_id,
            extra={"engine_id": self.engine_id},
        )

    def keeping(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn` (one write that names this engine, a transaction of its own); if the store
        refuses it and this engine's row turns out to be gone, the row is put back and
        `fn` made once more. Any other refusal stands (re-raised as it came). A row that is
        gone and that the store will not let be put back: `EngineRowLostError`."""
        try:
            return fn(*args, **kwargs)
        except StoreIntegrityError as exc:
            refused = exc
        try:
            back = self.restore()
        except StoreBusyError:
            raise
        except StoreError as exc:  # the row cannot be put back: the refusal stands
            if isinstance(exc, StoreGoneError) or self.store.engines.get(self.engine_id):
                raise refused from None
            raise EngineRowLostError(
                "its row in engines was deleted by another writer and the store refused to"
                f" put it back ({' '.join(str(exc).split())[:300]})"
            ) from refused
        if not back:
            raise refused
        return fn(*args, **kwargs)
