"""`swarm-engine ticket ...`: create, list, show, cancel, reopen."""

from __future__ import annotations

from typing import Any

import click

from swarm_engine.cli.app import (
    INT64,
    RUN_ID,
    STEP_ID,
    TICKET_ID,
    IdCommand,
    Seconds,
    Whole,
    example,
    parse_inputs,
    pass_existing,
    pass_settings,
    registry_of,
    store_of,
)
from swarm_engine.cli.output import (
    Col,
    ago,
    block,
    console,
    emit_json,
    err_console,
    label,
    money,
    ms,
    plain,
    print_fields,
    say,
    short,
    styled,
    table,
    usage_line,
    when,
    whole,
)
from swarm_engine.cli.text import NO_ERROR_TEXT, visible
from swarm_engine.config import Settings
from swarm_engine.records import TicketStatus
from swarm_engine.service import runs as runs_service
from swarm_engine.service import tickets as service
from swarm_engine.service.runs import MAX_PAGE_RUNS, MAX_PAGE_STEPS, PAGE_STEPS, SHOWN_RUNS
from swarm_engine.store.rows import Ticket


@click.group(epilog=example("swarm-engine ticket list"))
def ticket() -> None:
    """Create and manage tickets."""


ticket.command_class = IdCommand  # (`ticket show -5`: any ticket id a row can hold)


@ticket.command(
    "create",
    epilog=example(
        "swarm-engine ticket create --title count --agent word-count --input text='hi there'"
    ),
)
@click.option("--title", required=True, help="One-line title.")
@click.option("--description", default="", help="What to do (the agent's task).")
@click.option("--agent", "agent_id", metavar="NAME", help="Agent to run: NAME or NAME@VERSION.")
@click.option(
    "--workflow", "workflow_id", metavar="NAME", help="Workflow to run: NAME or NAME@VERSION."
)
@click.option("--input", "pairs", multiple=True, metavar="KEY=VALUE", help="An input (repeatable).")
@click.option("--inputs-json", metavar="JSON", help="All inputs as one JSON object.")
@click.option(
    "--priority", type=INT64, default=0, show_default=True, metavar="N", help="Higher runs first."
)
@click.option(
    "--max-attempts",
    type=Whole(1, 100),
    default=3,
    show_default=True,
    metavar="N",
    help="Claims it may get (a run whose engine died is re-queued until then).",
)
@click.option(
    "--timeout",
    "timeout_seconds",
    type=Seconds(min=0.001, max=365 * 86400.0),
    metavar="SECONDS",
    help="Whole-ticket timeout (default: the workflow's, else none).",
)
@click.option(
    "--draft", is_flag=True, help="Create as draft (engines ignore it until 'ticket open')."
)
@click.option("--json", "as_json", is_flag=True, help="Print the ticket as JSON.")
@pass_settings
def create(
    settings: Settings,
    title: str,
    description: str,
    agent_id: str | None,
    workflow_id: str | None,
    pairs: tuple[str, ...],
    inputs_json: str | None,
    priority: int,
    max_attempts: int,
    timeout_seconds: float | None,
    draft: bool,
    as_json: bool,
) -> None:
    """Create a ticket (open, unless --draft)."""
    service.check_target(agent_id, workflow_id, service.CLI_FIELDS)  # before the inputs
    new = service.NewTicket(
        title=title,
        description=description,
        agent=agent_id,
        workflow=workflow_id,
        inputs=parse_inputs(pairs, inputs_json),
        priority=priority,
        max_attempts=max_attempts,
        timeout_seconds=timeout_seconds,
        draft=draft,
    )
    with registry_of(settings) as registry, store_of(settings) as store:
        row = service.create(store, registry, new, service.CLI_FIELDS)
    if as_json:
        emit_json(row.as_dict())
    else:
        console.print(f"ticket {row.id} created ({styled(row.status)})")


@ticket.command(
    "list", epilog=example("swarm-engine ticket list --status failed --status cancelled --limit 10")
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="STATUS",
    help="Only tickets with this status; repeat it for tickets in any of several:"
    f" {', '.join(s.value for s in TicketStatus)}.",
)
@click.option(
    "--limit",
    type=Whole(1, 100000),
    default=50,
    show_default=True,
    metavar="N",
    help="At most this many tickets (the newest).",
)
@click.option(
    "--cursor",
    type=TICKET_ID,
    metavar="ID",
    help="Only tickets older than ticket ID (the next page, as the last page said).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the tickets as a JSON list.")
@pass_existing("tickets")
def list_(
    settings: Settings,
    statuses: tuple[str, ...],
    limit: int,
    cursor: int | None,
    as_json: bool,
) -> None:
    """List tickets, newest first: one line each (long values cut; 'ticket show' has them whole)."""
    statuses = tuple(dict.fromkeys(statuses))  # each once, in the order given
    with store_of(settings) as store:
        found = service.page(store, statuses=statuses, limit=limit, cursor=cursor)
    rows = found.items
    if as_json:
        emit_json([r.as_dict() for r in rows])
        _next_page(found, statuses, limit, err=True)
        return
    if not rows:
        which = f" with status {' or '.join(plain(s) for s in statuses)}" if statuses else ""
        if cursor is not None:  # a page past the last: the store need not be empty
            console.print(f"no more tickets{which} below id {cursor} (the end of the list)")
        else:
            console.print(f"no tickets{which} (create one: swarm-engine ticket create --help)")
        return
    with_priority = any(r.priority for r in rows)
    columns: list[str | Col] = [
        Col("id", justify="right"),
        "status",
        Col("title", flex=True, min=10),
        Col("agent / workflow", flex=True, min=20),
        *([Col("prio", hide_below=100)] if with_priority else []),
        "attempts",
        "updated",
        Col("result / error", flex=True, min=10),
    ]
    console.print(
        table(
            None,
            columns,
            (
                (
                    r.id,
                    styled(r.status),
                    r.title,
                    r.target,
                    *([r.priority] if with_priority else []),
                    f"{r.attempts}/{r.max_attempts}",
                    ago(r.updated_at),
                    _listed_outcome(r),
                )
                for r in rows
            ),
        )
    )
    _next_page(found, statuses, limit)


def _listed_outcome(row: Ticket) -> str:
    """A listed ticket's error, problem or result on one line (`short`); for a failed
    ticket whose error is empty or only whitespace, `NO_ERROR_TEXT`."""
    for value in (row.error, row.problem, row.result):
        if value:
            text = short(value, 200)
            if text:
                return text
    return NO_ERROR_TEXT if row.status == "failed" else ""


def _next_page(
    found: service.Page, statuses: tuple[str, ...], limit: int, *, err: bool = False
) -> None:
    """Say how to list the older tickets when some were left out: past `--limit`, or
    sooner when the page's tickets hold `PAGE_BYTES` of inputs and results (never a page
    cut silently). On stderr under --json, so stdout stays one JSON list."""
    if found.next_cursor is None:
        return
    why = "" if len(found.items) >= limit else " (this page ended early: its tickets are large)"
    again = "".join(" --status " + plain(s) for s in statuses)
    line = (
        f"more tickets{why}: swarm-engine ticket list{again} --limit {limit}"
        f" --cursor {found.next_cursor}"
    )
    (err_console if err else console).print(f"[dim]{line}[/dim]", highlight=False)


@ticket.command("show", epilog=example("swarm-engine ticket show 7"))
@click.argument("ticket_id", type=TICKET_ID)
@click.option(
    "--runs",
    "shown_runs",
    type=Whole(1, MAX_PAGE_RUNS),
    default=SHOWN_RUNS,
    show_default=True,
    metavar="N",
    help="Show the newest N runs.",
)
@click.option(
    "--before", type=RUN_ID, metavar="RUN", help="Only runs older than run RUN (to page)."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the ticket, its runs, steps and events as JSON."
)
@pass_existing("tickets")
def show(
    settings: Settings, ticket_id: int, shown_runs: int, before: int | None, as_json: bool
) -> None:
    """A ticket with its whole result or error, then its newest runs' steps (one line each)."""
    with store_of(settings) as store:
        found = service.detail(store, ticket_id, runs=shown_runs, before=before)
    row, runs = found.ticket, found.runs.items
    if as_json:
        emit_json(found.as_dict())
        for run in runs:
            _more_steps(ticket_id, run, err=True)
        _more_runs(ticket_id, found, err=True)
        return
    say(f"[bold]ticket {ticket_id}[/bold]: {label(row.title)}")
    fields = [
        (
            "status",
            f"{styled(row.status)} · {label(row.target)} · priority {row.priority}"
            f" · {row.attempts} of {row.max_attempts} attempts used",
        ),
        ("created", when(row.created_at)),
        ("updated", when(row.updated_at)),
        ("description", block(row.description)),
        ("inputs", block(whole(row.inputs))),
    ]
    if row.result is not None:
        fields.append(("result", block(whole(row.result))))
    if row.error:
        fields.append(("error", f"[red]{block(row.error)}[/red]"))
    fields += [("malformed", f"[yellow]{plain(d)}[/yellow]") for d in row.defects]
    print_fields(fields)
    for run in runs:
        usage = usage_line(run)
        steps = run["steps"]
        with_usage = any(s["input_tokens"] or s["output_tokens"] or s["cost_usd"] for s in steps)
        console.print()
        console.print(
            table(
                f"run {run['id']} (ticket attempt {label(run['attempt'])}"
                + _ran(run)
                + f"): {styled(run['status'])} in {ms(run['duration_ms']) or '-'}"
                + (f" · {usage}" if usage else ""),
                [
                    Col("step", flex=True, min=12),
                    "attempt",
                    "status",
                    Col("agent", flex=True, min=16),
                    Col("vm", flex=True, min=8, hide_below=100),
                    "duration",
                    "exit",
                    *(["tokens", "cost"] if with_usage else []),
                    Col("outputs / error", flex=True, min=12),
                ],
                (
                    (
                        s["step_id"],
                        s["attempt"],
                        styled(s["status"]),
                        f"{s['agent_name']}@{s['agent_version']}",
                        s["vm_id"] or "",
                        ms(s["duration_ms"]),
                        s["exit_code"],
                        *(
                            [
                                (s["input_tokens"] or 0) + (s["output_tokens"] or 0) or "",
                                money(s["cost_usd"]) if s["cost_usd"] else "",
                            ]
                            if with_usage
                            else []
                        ),
                        _outcome(ticket_id, run, s),
                    )
                    for s in steps
                ),
            )
        )
        bare = [label(s["step_id"]) for s in steps if s.get("vm_isolation") == "none"]
        if bare:
            console.print(
                "[yellow]warning:[/yellow] step(s) "
                + ", ".join(bare)
                + ' ran unisolated (isolation = "none")'
            )
        _more_steps(ticket_id, run)
    if runs:
        console.print(
            f"[dim]whole outputs: swarm-engine logs {ticket_id} (or: ticket show {ticket_id}"
            " --json)[/dim]"
        )
    _more_runs(ticket_id, found)


def _outcome(ticket_id: int, run: dict[str, Any], step: dict[str, Any]) -> str:
    """A step's error, else its outputs, on one line; one the view left out (past its
    `VIEW_VALUES_BYTES`: `left_out`) is said so, with the page of one that shows it whole."""
    for name in ("error", "outputs"):
        if step.get(name):
            return short(step[name], 200)
        if name in step.get("left_out", ()):
            return (
                f"({name} left out here; whole: swarm-engine ticket steps {ticket_id}"
                f" --run {run['id']} --before {step['id'] + 1} --limit 1)"
            )
    return ""


def _more_steps(ticket_id: int, run: dict[str, Any], *, err: bool = False) -> None:
    """Say that a run's older steps were left out, how many, and how to page to them."""
    if run.get("steps_before") is None:
        return
    shown, total = len(run["steps"]), run["steps_total"]
    line = (
        f"run {run['id']}: {shown} of {total} steps shown (the newest); {total - shown} older"
        f" ones: swarm-engine ticket steps {ticket_id} --run {run['id']}"
        f" --before {run['steps_before']} [--limit N]"
    )
    (err_console if err else console).print(f"[dim]{line}[/dim]", highlight=False)


@ticket.command(
    "steps", epilog=example("swarm-engine ticket steps 7", "swarm-engine ticket steps 7 --run 9")
)
@click.argument("ticket_id", type=TICKET_ID)
@click.option("--run", "run_id", type=RUN_ID, metavar="N", help="Run N (default: the latest).")
@click.option(
    "--before", type=STEP_ID, metavar="STEP", help="Only steps older than STEP (an id; to page)."
)
@click.option(
    "--limit",
    type=Whole(1, MAX_PAGE_STEPS),
    default=PAGE_STEPS,
    show_default=True,
    metavar="N",
    help=f"Print the newest N steps (at most {MAX_PAGE_STEPS}).",
)
@pass_existing("tickets")
def steps_(
    settings: Settings, ticket_id: int, run_id: int | None, before: int | None, limit: int
) -> None:
    """A run's steps as JSON, a page at a time: the newest N below --before, oldest first
    (as `GET /v1/runs/N/steps`); when older ones are left out, the last line on stderr
    says how many and gives the command for the next page."""
    from swarm_engine.errors import NotFoundError
    from swarm_engine.service.logs import pick_run

    with store_of(settings) as store:
        found, run = pick_run(store, ticket_id, run_id)
        if run is None:
            raise NotFoundError(f"ticket {ticket_id} has not run yet (it is {found.status})")
        page = runs_service.steps(store, int(run["id"]), before=before, limit=limit)
    emit_json(page.items)
    if page.before is not None:
        line = (
            f"run {run['id']} has {page.total} steps; older ones: swarm-engine ticket steps"
            f" {ticket_id} --run {run['id']} --before {page.before} --limit {limit}"
        )
        err_console.print(f"[dim]{line}[/dim]", highlight=False)


def _more_runs(ticket_id: int, found: service.Detail, *, err: bool = False) -> None:
    """Say that older runs were left out, and how to see them (never hide them silently)."""
    shown = found.runs
    if shown.before is None:
        return
    line = (
        f"{len(shown.items)} of {shown.total} runs shown (the newest); older ones:"
        f" swarm-engine ticket show {ticket_id} --before {shown.before} [--runs N]"
    )
    (err_console if err else console).print(f"[dim]{line}[/dim]", highlight=False)


@ticket.command("cancel", epilog=example("swarm-engine ticket cancel 7"))
@click.argument("ticket_id", type=TICKET_ID)
@pass_existing("tickets")
def cancel(settings: Settings, ticket_id: int) -> None:
    """Cancel a ticket; a running one is stopped by its engine within about a second."""
    with store_of(settings) as store:
        service.cancel(store, ticket_id)
    console.print(f"ticket {ticket_id} cancelled")


@ticket.command("reopen", epilog=example("swarm-engine ticket reopen 7"))
@click.argument("ticket_id", type=TICKET_ID)
@pass_existing("tickets")
def reopen(settings: Settings, ticket_id: int) -> None:
    """Put a done, failed or cancelled ticket back in the queue (open).

    A ticket just cancelled whose engine is still stopping its run is queued too, but no
    engine runs it until that run has ended (never two runs of a ticket at once)."""
    with store_of(settings) as store:
        service.reopen(store, ticket_id)
        engine = service.stopping_on(store, ticket_id)
    if engine is None:
        console.print(f"ticket {ticket_id} reopened")
    else:
        console.print(
            f"ticket {ticket_id} reopened; it runs once its previous run, on engine"
            f" {visible(engine)}, has ended",
            markup=False,
            highlight=False,
        )


@ticket.command("open", epilog=example("swarm-engine ticket open 7"))
@click.argument("ticket_id", type=TICKET_ID)
@pass_existing("tickets")
def open_(settings: Settings, ticket_id: int) -> None:
    """Queue a draft ticket for the engines."""
    with store_of(settings) as store:
        service.open_draft(store, ticket_id)
    console.print(f"ticket {ticket_id} is open")


def _ran(run: dict[str, Any]) -> str:
    """The workflow a run ran, as its row says (the ticket's row may name another since:
    any client can write it), for the run's heading; nothing for a single-agent run."""
    name = run.get("workflow_name")
    if not name:
        return ""
    version = run.get("workflow_version")
    return f", workflow {label(name)}" + (f"@{label(version)}" if version else "")
