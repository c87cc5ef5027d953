"""Tickets an engine passes over, for a while and a bounded number of them.

A ticket whose claim and failing the store ignored or refused (a trigger's RAISE(IGNORE),
`ticket_events` ids spent) is passed over by that engine (`TicketStore.skipped`), and so
is a live one the store keeps live whatever the engine writes (`TicketStore.frozen`).
Another client may then cure it (drop the trigger, delete the row): so each is passed over
only for `retry_after` seconds (the engine makes it `PASS_OVER_HEARTBEATS` heartbeat
intervals, 5 minutes by default), then tried again as any ticket is (one warning line a
retry when it is passed over again). At most `limit` are held: a trigger that ignores
every claim cannot grow the engine's memory, or the claim statement that lists them,
without bound; past it the oldest is dropped, and so tried again first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

RETRY_AFTER = 300.0
"""Seconds a ticket is passed over before it is tried again (the store's default)."""
PASS_OVER_HEARTBEATS = 60
"""An engine's `retry_after`, in heartbeat intervals (60 x 5 s: 5 minutes by default)."""
LIMIT = 1000
"""The most ticket ids held at once."""


class PassedOver:
    """A set of ticket ids, each held for `retry_after` seconds, at most `limit` of them
    (the oldest dropped first). Reading it (`in`, iterating, `len`) drops those due."""

    def __init__(
        self,
        retry_after: float = RETRY_AFTER,
        limit: int = LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retry_after = retry_after
        self.limit = limit
        self._clock = clock
        self._since: dict[int, float] = {}
        """Id -> when it was passed over, oldest first (insertion order)."""

    def add(self, ticket_id: int) -> None:
        self._since.pop(ticket_id, None)
        self._since[ticket_id] = self._clock()
        while len(self._since) > self.limit:
            del self._since[next(iter(self._since))]

    def discard(self, ticket_id: int) -> None:
        self._since.pop(ticket_id, None)

    def _due(self) -> None:
        cutoff = self._clock() - self.retry_after
        while self._since:
            oldest, since = next(iter(self._since.items()))
            if since > cutoff:
                break
            del self._since[oldest]

    def __contains__(self, ticket_id: object) -> bool:
        self._due()
        return ticket_id in self._since

    def __iter__(self) -> Iterator[int]:
        self._due()
        return iter(list(self._since))

    def __len__(self) -> int:
        self._due()
        return len(self._since)
