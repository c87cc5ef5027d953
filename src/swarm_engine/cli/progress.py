"""The live view of `run-ticket --wait`: a table of steps on a terminal, lines otherwise."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live

from swarm_engine.cli import unwritable
from swarm_engine.cli.output import Col, Unpadded, duration, label, styled, table, visible
from swarm_engine.engine.events import Event


@dataclass
class StepView:
    status: str = "queued"
    vm: str = ""
    started: float | None = None
    ended: float | None = None
    retries: int = 0
    """Retries before this attempt (the stored `retry_count`); shown as attempt retries + 1."""
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

    def render(self) -> Unpadded:
        title = f"ticket {self.ticket_id}" + (f" · run {self.run_id}" if self.run_id else "")
        now = time.monotonic()
        rows = []
        for sid, v in self.steps.items():
            took = "" if v.started is None else duration((v.ended or now) - v.started)
            name = sid if not v.retries else f"{sid} (attempt {v.retries + 1})"
            rows.append((name, styled(v.status), v.vm, took, v.last))
        columns: list[str | Col] = [
            Col("step", flex=True, min=8),
            "status",
            Col("vm", flex=True, min=8),
            "time",
            Col("output", flex=True, min=10),
        ]
        return table(label(title), columns, rows, width=self.console.width)

    def __call__(self, event: Event) -> None:
        # output that cannot be written (a closed pipe, a full disk) stops the view, never
        # the run: `run-ticket` says so at its end (`cli/unwritable.py`)
        with unwritable.guard(self.console.file):
            self._show(event)

    def _show(self, event: Event) -> None:
        sid = event.step_id or ""
        if event.kind == "run_started":
            self.run_id = event.run_id
            self._line(f"run {event.run_id} started")
        elif event.kind == "step_queued":
            self.steps[sid] = StepView(retries=event.data.get("attempt", 0))
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
            took = f" in {duration(view.ended - view.started)}" if view.started else ""
            extra = f": {event.data['error']}" if event.data.get("error") else ""
            self._line(f"step {sid} {view.status}{took}{extra}")
        if self.live is not None:
            self.live.update(self.render())

    def _line(self, text: str) -> None:
        """One progress line (off a terminal): step ids, VM ids and errors are any writer's
        or any step's text, shown as data (`visible`: no control or bidi character)."""
        if self.live is None:
            self.console.print(visible(text), markup=False, highlight=False, soft_wrap=True)
