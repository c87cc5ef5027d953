"""The live view of `run-ticket --wait`: a table of steps on a terminal, lines otherwise."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from swarm_engine.cli.output import short, styled
from swarm_engine.engine.events import Event


@dataclass
class StepView:
    status: str = "queued"
    vm: str = ""
    started: float | None = None
    ended: float | None = None
    attempt: int = 0
    last: str = ""


@dataclass
class Progress:
    console: Console
    ticket_id: int
    steps: dict[str, StepView] = field(default_factory=dict)
    live: Live | None = None
    run_id: int | None = None

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            self.live = Live(self.render(), console=self.console, refresh_per_second=8)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.update(self.render())
            self.live.__exit__(None, None, None)

    def render(self) -> Table:
        t = Table(title=f"ticket {self.ticket_id}" + (f" · run {self.run_id}" if self.run_id else ""),
                  title_justify="left", header_style="bold")  # fmt: skip
        for col in ("step", "status", "vm", "time", "output"):
            t.add_column(col, overflow="fold")
        now = time.monotonic()
        for sid, v in self.steps.items():
            took = ""
            if v.started is not None:
                took = f"{(v.ended or now) - v.started:.1f}s"
            name = sid if not v.attempt else f"{sid} (try {v.attempt + 1})"
            t.add_row(name, styled(v.status), v.vm, took, short(v.last, 50))
        return t

    def __call__(self, event: Event) -> None:
        sid = event.step_id or ""
        if event.kind == "run_started":
            self.run_id = event.run_id
            self._line(f"run {event.run_id} started")
        elif event.kind == "step_queued":
            self.steps[sid] = StepView(attempt=event.data.get("attempt", 0))
        elif event.kind == "step_started":
            view = self.steps.setdefault(sid, StepView())
            view.status, view.vm, view.started = "running", event.data["vm_id"], time.monotonic()
            self._line(f"step {sid} started on {view.vm}")
        elif event.kind == "step_output":
            text = event.data["text"].strip().splitlines()
            if text:
                self.steps.setdefault(sid, StepView()).last = text[-1]
        elif event.kind == "step_finished":
            view = self.steps.setdefault(sid, StepView())
            view.ended = time.monotonic()
            view.status = "done" if event.data["ok"] else "failed"
            if event.data.get("error"):
                view.last = event.data["error"]
            took = f" in {view.ended - view.started:.2f}s" if view.started else ""
            extra = f": {event.data['error']}" if event.data.get("error") else ""
            self._line(f"step {sid} {view.status}{took}{extra}")
        if self.live is not None:
            self.live.update(self.render())

    def _line(self, text: str) -> None:
        if self.live is None:
            self.console.print(text, highlight=False)
