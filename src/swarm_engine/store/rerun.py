"""A transaction PostgreSQL rolled back to break a deadlock or a serialization conflict,
run again from its start.

PostgreSQL ends one of the transactions of a deadlock (SQLSTATE 40P01), or one that
cannot be serialized (40001), and rolls it back whole: it did nothing, so running it again
is safe, and is what PostgreSQL's manual asks of the client ("Serialization Failure
Handling"). `PostgresDatabase` does so where it owns the transaction: an autocommit
statement (`run` outside a transaction) and `atomic(body)`, whose body is only SQL through
the store, or does besides only what is safe to do again: a step made once and skipped by
the next try (`agent register`'s package swap, `registry/agent_packages.py`), or one that is
idempotent (the lease reclaim's fence, `store/reclaim.py`); whatever else it keeps in
memory is told after the commit (`engine/leases.py`: a row put back). A
`with db.transaction():` block is not run again: a context manager cannot run its block
twice, so its caller gets `StoreRolledBackError` (a `StoreBusyError`); no such block is
left outside the store (docs/engine.md lists what runs again).

At most `TRIES` tries, with a jittered pause between them (about 20 ms, doubling), all
within the calls' wait (`busy_timeout`, or less under `wait_at_most`): a pause that would
end past it is not taken and the last error is raised, one line, saying how many tries.
Other class-40 errors are not retried: 40003 (statement completion unknown) may have
written, and 40002 (an integrity violation at commit) would fail again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from swarm_engine.errors import StoreRolledBackError

log = logging.getLogger(__name__)

T = TypeVar("T")

TRIES = 5
FIRST_PAUSE = 0.02
"""Seconds before the second try (jittered by half either way); doubled after each."""


def pause(tries: int) -> float:
    """Seconds to wait after `tries` failed tries: 10-30 ms after the first, then doubling."""
    return float(FIRST_PAUSE * 2 ** (tries - 1) * (0.5 + random.random()))


def rerun(once: Callable[[], T], wait_ms: int) -> T:
    """`once()`, run again while it raises `StoreRolledBackError`: at most `TRIES` times,
    never pausing past `wait_ms` after the first try began. Raises the last error then,
    its text saying how many tries were made."""
    deadline = time.monotonic() + wait_ms / 1000
    for tries in range(1, TRIES + 1):
        try:
            return once()
        except StoreRolledBackError as exc:
            wait = pause(tries)
            if tries == TRIES or time.monotonic() + wait > deadline:
                if tries == 1:
                    raise
                raise StoreRolledBackError(f"{exc} ({tries} tries)") from exc.__cause__
            log.info("%s; running it again (try %d of %d)", exc, tries + 1, TRIES)
            time.sleep(wait)
    raise AssertionError("unreachable")
