"""Progress events the engine emits while it runs a ticket (for the CLI's live view)."""

from __future__ import annotations

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
