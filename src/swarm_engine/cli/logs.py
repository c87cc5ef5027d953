"""`swarm-engine logs`: a ticket's step logs, whole or followed live."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from swarm_engine.cli.app import TICKET_ID, example, numbered, pass_existing, store_of
from swarm_engine.cli.output import console, plain
from swarm_engine.config import Settings
from swarm_engine.errors import NotFoundError

if TYPE_CHECKING:
    from swarm_engine.store import Store

FOLLOW_POLL = 0.2
"""Seconds between looks for new log lines while following."""
TERMINAL = ("done", "failed", "cancelled")


@click.command(
    short_help="Print a ticket's step logs (--follow: as they are written).",
    epilog=example("swarm-engine logs 7 --step report", "swarm-engine logs 7 --follow"),
)
@click.argument("ticket_id", type=TICKET_ID)
@click.option("--run", "run_id", type=TICKET_ID, metavar="N", help="Run N (default: the latest).")
@click.option("--step", "step_id", metavar="STEP", help="Only this step (its id in the workflow).")
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep printing lines as the steps write them, until the ticket ends.",
)
@pass_existing("tickets")
def logs(
    settings: Settings, ticket_id: int, run_id: int | None, step_id: str | None, follow: bool
) -> None:
    """Print the output of a ticket's steps (of its latest run, or run N): what each
    step's `output.log` holds, read from the store, so any host can show it."""
    with store_of(settings) as store:
        if follow:
            _follow(store, ticket_id, run_id, step_id)
            return
        run = _pick_run(store, ticket_id, run_id)
        if run is None:
            return
        steps = _steps(store, run, step_id)
        for s in steps:
            _rule(run, s)
            chunks = _all_chunks(store, int(s["id"]))
            path = Path(s["log_path"]) if s["log_path"] else None
            if chunks:
                _out("".join(chunks))
            elif path and path.is_file():  # a run recorded before logs were stored
                _out(path.read_text(errors="replace"))
            if s["error"]:
                click.echo(f"error: {s['error']}")
            if path and path.parent.is_dir():
                for artifact in sorted(p for p in path.parent.iterdir() if p != path):
                    click.echo(f"artifact: {artifact}")


def _pick_run(store: Store, ticket_id: int, run_id: int | None) -> dict[str, Any] | None:
    ticket = store.tickets.get(ticket_id)
    runs = store.runs.runs_for_ticket(ticket_id)
    if run_id is not None:
        runs = [r for r in runs if r["id"] == run_id]
        if not runs:
            raise NotFoundError(f"ticket {ticket_id} has no run {run_id}")
    if not runs:
        console.print(
            f"ticket {ticket_id} has not run yet (it is {plain(ticket.status)})", highlight=False
        )
        return None
    return runs[-1]


def _steps(store: Store, run: dict[str, Any], step_id: str | None) -> list[dict[str, Any]]:
    steps = numbered(store.runs.steps(int(run["id"])))
    if step_id is not None and all(s["step_id"] != step_id for s in steps):
        known = ", ".join(sorted({str(s["step_id"]) for s in steps}))
        raise NotFoundError(f"run {run['id']} has no step {step_id!r} (its steps: {known})")
    return [s for s in steps if step_id is None or s["step_id"] == step_id]


def _all_chunks(store: Store, step_exec_id: int) -> list[str]:
    out: list[str] = []
    last = 0
    while batch := store.logs.after([step_exec_id], last):
        out += [c["data"] for c in batch]
        last = batch[-1]["id"]
    return out


def _rule(run: dict[str, Any], step: dict[str, Any]) -> None:
    console.rule(
        plain(f"run {run['id']} · step {step['step_id']} · attempt {step['attempt']}"
              f" · {step['status']}")
    )  # fmt: skip


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _follow(store: Store, ticket_id: int, run_id: int | None, step_id: str | None) -> None:
    """Print new chunks of the run's steps as they arrive; a later run (a retry) is
    followed too unless `run_id` pins one. Ends once the ticket has ended and every
    chunk is printed."""
    store.tickets.get(ticket_id)  # NotFoundError for a ticket that does not exist
    last = 0
    shown_run: int | None = None
    shown_step: int | None = None
    while True:
        ticket = store.tickets.get(ticket_id)
        runs = store.runs.runs_for_ticket(ticket_id)
        if run_id is not None:
            runs = [r for r in runs if r["id"] == run_id]
        run = runs[-1] if runs else None
        ended = ticket.status in TERMINAL or ticket.status == "draft"
        if run is None:
            if ended or run_id is not None:
                console.print(
                    f"ticket {ticket_id} has not run (it is {plain(ticket.status)})",
                    highlight=False,
                )
                return
            time.sleep(FOLLOW_POLL)
            continue
        steps = {int(s["id"]): s for s in _steps(store, run, step_id)}
        batch = store.logs.after(list(steps), last)
        for chunk in batch:
            step = steps[chunk["step_execution_id"]]
            if (shown_run, shown_step) != (run["id"], step["id"]):
                _rule(run, step)
                shown_run, shown_step = run["id"], step["id"]
            _out(chunk["data"])
            last = chunk["id"]
        if batch:
            continue
        if ended and run["status"] != "running":
            # everything is stored before the run closes: one last look, then done
            if not store.logs.after(list(steps), last):
                for s in steps.values():
                    if s["error"]:
                        click.echo(f"error ({s['step_id']}): {s['error']}")
                return
            continue
        time.sleep(FOLLOW_POLL)
