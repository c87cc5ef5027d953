"""`swarm-engine ticket ...`: create, list, show, cancel, reopen."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.panel import Panel

from swarm_engine.cli.app import parse_inputs, pass_settings, registry_of, store_of
from swarm_engine.cli.output import ago, console, emit_json, ms, short, styled, table, usage_line
from swarm_engine.config import Settings
from swarm_engine.errors import UsageError


@click.group()
def ticket() -> None:
    """Create and manage tickets."""


@ticket.command("create")
@click.option("--title", required=True, help="One-line title.")
@click.option("--description", default="", help="What to do (the agent's task).")
@click.option("--agent", "agent_id", help="Agent to run: NAME or NAME@VERSION.")
@click.option("--workflow", "workflow_id", help="Workflow to run: NAME or NAME@VERSION.")
@click.option("--input", "pairs", multiple=True, metavar="KEY=VALUE", help="An input (repeatable).")
@click.option("--inputs-json", help="All inputs as one JSON object.")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option("--max-attempts", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option(
    "--timeout", "timeout_seconds", type=click.FloatRange(min=0.001), help="Ticket timeout (s)."
)
@click.option("--draft", is_flag=True, help="Create as draft (engines ignore it until queued).")
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
    if (agent_id is None) == (workflow_id is None):
        raise UsageError("give exactly one of --agent or --workflow")
    inputs = parse_inputs(pairs, inputs_json)
    with registry_of(settings) as registry:  # fail now on an unknown agent or workflow
        if agent_id:
            registry.agent(agent_id)
            if agent_id.startswith("_template:"):
                raise UsageError(f"{agent_id!r} is a template; register an agent made from it")
        else:
            registry.workflow(str(workflow_id))
    with store_of(settings) as store:
        ticket_id = store.tickets.create(
            title=title,
            description=description,
            agent_id=agent_id,
            workflow_id=workflow_id,
            inputs=inputs,
            priority=priority,
            status="draft" if draft else "open",
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds,
        )
        row = store.tickets.get(ticket_id)
    if as_json:
        emit_json(row.as_dict())
    else:
        console.print(f"ticket {ticket_id} created ({styled(row.status)})")


@ticket.command("list")
@click.option("--status", help="Only tickets with this status.")
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_settings
def list_(settings: Settings, status: str | None, limit: int, as_json: bool) -> None:
    """List tickets, newest first."""
    with store_of(settings) as store:
        rows = store.tickets.list(status, limit)
    if as_json:
        emit_json([r.as_dict() for r in rows])
        return
    console.print(
        table(
            None,
            [
                "id",
                "status",
                "title",
                "agent / workflow",
                "prio",
                "tries",
                "updated",
                "result / error",
            ],
            (
                (
                    r.id,
                    styled(r.status),
                    short(r.title, 40),
                    r.target,
                    r.priority,
                    r.attempts,
                    ago(r.updated_at),
                    short(r.error or r.problem or r.result or "", 50),
                )
                for r in rows
            ),
        )
    )


@ticket.command("show")
@click.argument("ticket_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@pass_settings
def show(settings: Settings, ticket_id: int, as_json: bool) -> None:
    """A ticket with its runs and steps."""
    with store_of(settings) as store:
        row = store.tickets.get(ticket_id)
        runs = store.runs.runs_for_ticket(ticket_id)
        for run in runs:
            run["steps"] = store.runs.steps(run["id"])
        events = store.tickets.events(ticket_id)
    if as_json:
        emit_json(row.as_dict() | {"runs": runs, "events": events})
        return
    body = [
        f"[bold]{escape(row.title)}[/bold]  ({styled(row.status)}, {escape(row.target)},"
        f" priority {row.priority})",
        escape(row.description),
        f"inputs: {escape(short(row.inputs, 400))}",
        f"attempts: {row.attempts}/{row.max_attempts}   created {ago(row.created_at)}",
    ]
    if row.result is not None:
        body.append(f"result: {escape(short(row.result, 400))}")
    if row.error:
        body.append(f"[red]error: {escape(row.error)}[/red]")
    for defect in row.defects:
        body.append(f"[yellow]malformed: {escape(defect)}[/yellow]")
    console.print(Panel("\n".join(b for b in body if b), title=f"ticket {ticket_id}", expand=False))
    for run in runs:
        usage = usage_line(run)
        console.print(
            table(
                f"run {run['id']} (attempt {run['attempt']}): {styled(run['status'])} in "
                f"{ms(run['duration_ms'])}" + (f" — {usage}" if usage else ""),
                [
                    "step",
                    "try",
                    "status",
                    "agent",
                    "vm",
                    "duration",
                    "exit",
                    "tokens",
                    "cost",
                    "outputs / error",
                ],
                (
                    (
                        s["step_id"],
                        s["retry_count"],
                        styled(s["status"]),
                        f"{s['agent_name']}@{s['agent_version']}",
                        s["vm_id"] or "",
                        ms(s["duration_ms"]),
                        s["exit_code"],
                        (s["input_tokens"] + s["output_tokens"]) or "",
                        f"${s['cost_usd']:.4f}" if s["cost_usd"] else "",
                        short(s["error"] or s["outputs"] or "", 60),
                    )
                    for s in run["steps"]
                ),
            )
        )


@ticket.command("cancel")
@click.argument("ticket_id", type=int)
@pass_settings
def cancel(settings: Settings, ticket_id: int) -> None:
    """Cancel a ticket; a running one is stopped by its engine within about a second."""
    with store_of(settings) as store:
        store.tickets.cancel(ticket_id)
    console.print(f"ticket {ticket_id} cancelled")


@ticket.command("reopen")
@click.argument("ticket_id", type=int)
@pass_settings
def reopen(settings: Settings, ticket_id: int) -> None:
    """Put a done, failed or cancelled ticket back in the queue (open)."""
    with store_of(settings) as store:
        store.tickets.reopen(ticket_id)
    console.print(f"ticket {ticket_id} reopened")


@ticket.command("open")
@click.argument("ticket_id", type=int)
@pass_settings
def open_(settings: Settings, ticket_id: int) -> None:
    """Queue a draft ticket for the engines."""
    with store_of(settings) as store:
        store.tickets.open(ticket_id)
    console.print(f"ticket {ticket_id} is open")
