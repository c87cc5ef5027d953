"""Progress events the engine emits while it runs a ticket (for the CLI's live view)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    kind: str  # run_started, step_queued, step_started, step_output, step_finished, run_finished
    ticket_id: int
    run_id: int | None = None
    step_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


EventSink = Callable[[Event], None]


def ignore(_: Event) -> None:
    return None


log = logging.getLogger(__name__)


def guarded(sink: EventSink) -> EventSink:
    """`sink` whose failures never reach the run that emits to it (a live view whose output
    cannot be written, a listener's bug): each is logged, the event dropped, the run goes
    on and is recorded as it ends."""
    if sink is ignore:
        return sink

    def tell(event: Event) -> None:
        try:
            sink(event)
        except Exception as exc:
            log.warning("ticket %s: an event listener failed (%s): %s", event.ticket_id,
                        event.kind, exc)  # fmt: skip

    return tell
