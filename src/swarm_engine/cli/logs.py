"""`swarm-engine logs`: a ticket's step logs, whole or followed live."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click
from rich.cells import cell_len

from swarm_engine.cli.app import RUN_ID, TICKET_ID, IdCommand, example, pass_existing, store_of
from swarm_engine.cli.output import brief, console, literal, plain, visible, visible_lines
from swarm_engine.cli.text import error_line
from swarm_engine.config import Settings
from swarm_engine.service.logs import (
    LogFollower,
    chunks,
    no_steps,
    pick_run,
    read_log_file,
    step_artifacts,
    steps_of,
)

if TYPE_CHECKING:
    from swarm_engine.store import Store

FOLLOW_POLL = 0.1
"""Seconds between looks for new log lines while following."""


@click.command(
    cls=IdCommand,
    short_help="Print a ticket's step logs (--follow: as they are written).",
    epilog=example("swarm-engine logs 7 --step report", "swarm-engine logs 7 --follow"),
)
@click.argument("ticket_id", type=TICKET_ID)
@click.option("--run", "run_id", type=RUN_ID, metavar="N", help="Run N (default: the latest).")
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
    step's `output.log` holds, read from the store, so any host can show it (all of it,
    chunk by chunk as it is read: a log of any size takes little memory). A run without
    steps (its plan failed before any) is one line with its error."""
    with store_of(settings) as store:
        if follow:
            _follow(store, ticket_id, run_id, step_id)
            return
        ticket, run = pick_run(store, ticket_id, run_id)
        if run is None:
            console.print(
                f"ticket {ticket_id} has not run yet (it is {plain(ticket.status)})",
                highlight=False,
            )
            return
        artifacts_dir = settings.artifacts_dir
        any_step = False
        log = _Log()
        for s in steps_of(store, run, step_id):
            any_step = True
            _rule(run, s)
            stored = False
            for data in chunks(store, int(s["id"])):
                log.out(data)
                stored = True
            if not stored:  # a run recorded before logs were stored: its log file, as the
                text = read_log_file(s["log_path"], artifacts_dir)  # API reads it
                if text:
                    log.out(text)
            log.end_line()
            if s["error"]:
                click.echo(f"error: {error_line(s['error'])}")
            listed, more = step_artifacts(s["log_path"], artifacts_dir)
            for artifact in listed:
                click.echo(f"artifact: {visible(str(artifact))}")
            if more:
                click.echo(f"(more artifacts in {visible(str(listed[0].parent))} are not listed)")
        if not any_step:  # (with --step, steps_of said there is no such step)
            _say_no_steps(run)


def _say_no_steps(run: dict[str, Any]) -> None:
    """One line for a run without steps (its plan failed before any: `ticket show`
    points here), with its error escaped as a step's is."""
    error = f": error: {error_line(run['error'])}" if run.get("error") else ""
    click.echo(no_steps(run, brief(run.get("status"))) + error)


def _rule(run: dict[str, Any], step: dict[str, Any]) -> None:
    """A step's header rule. Into a pipe or file it is written as Rich writes it, but
    without Rich's rendering (which cost a run of 300,000 steps minutes); to a terminal
    (styled), in an encoding that is not UTF-8, or too long to centre, Rich writes it."""
    title = (
        f"run {brief(run['id'])} · step {brief(step['step_id'])}"
        f" · attempt {brief(step['attempt'])} · {brief(step['status'])}"
    )
    width, used = console.width, cell_len(title)
    if console.is_terminal or "utf" not in console.encoding.lower() or used + 4 > width:
        console.rule(literal(title))
        return
    side = (width - used) // 2  # as rich.rule.Rule centres a title
    left = side - 1
    right = min(side + 1, width - left - used - 2)
    sys.stdout.write(f"{'─' * left} {title} {'─' * right}\n")


class _Log:
    """Stored log text to stdout, its control characters shown as `\\xNN` (newlines and
    tabs kept), to a terminal and a pipe alike (docs/cli.md; the API's log download is
    verbatim); what follows a log that ends mid-line (a step's rule, its error) starts on
    a line of its own (`12345error: boom` was one line)."""

    def __init__(self) -> None:
        self.mid_line = False

    def out(self, text: str) -> None:
        if not text:
            return
        sys.stdout.write(visible_lines(text))
        sys.stdout.flush()
        self.mid_line = not text.endswith("\n")

    def end_line(self) -> None:
        """End the line a log left open, if it did."""
        if self.mid_line:
            sys.stdout.write("\n")
            self.mid_line = False


def _follow(store: Store, ticket_id: int, run_id: int | None, step_id: str | None) -> None:
    """Print new chunks of the run's steps as they arrive (`service.logs.LogFollower`: a
    later run, a retry, is followed too unless `run_id` pins one). Ends once the ticket
    has ended and every chunk is printed. `NotFoundError` (exit 3), as without --follow,
    for a run that is not the ticket's or a step the run does not have."""
    follower = LogFollower(ticket_id, run_id, step_id, strict=True)
    shown: tuple[Any, Any] | None = None
    log = _Log()
    while True:
        batch = follower.poll(store)
        for chunk in batch:
            if shown != (chunk.run["id"], chunk.step["id"]):
                log.end_line()
                _rule(chunk.run, chunk.step)
                shown = (chunk.run["id"], chunk.step["id"])
            log.out(chunk.data)
        if follower.finished:
            break
        if not batch:
            time.sleep(FOLLOW_POLL)
    log.end_line()
    if follower.never_ran:
        assert follower.ticket is not None
        console.print(
            f"ticket {ticket_id} has not run (it is {plain(follower.ticket.status)})",
            highlight=False,
        )
        return
    if follower.steps_total == 0 and step_id is None and follower.run is not None:
        _say_no_steps(follower.run)
    for s in follower.steps.values():
        if s["error"]:
            click.echo(f"error ({brief(s['step_id'])}): {error_line(s['error'])}")
    left_out = follower.steps_total - len(follower.steps)
    if step_id is None and left_out > 0 and follower.steps:
        first = min(follower.steps)
        run = next(iter(follower.steps.values())).get("run_id")
        click.echo(
            f"(errors of the newest {len(follower.steps)} of {follower.steps_total} steps;"
            f" the {left_out} older ones: swarm-engine ticket steps {ticket_id} --run {run}"
            f" --before {first})"
        )
