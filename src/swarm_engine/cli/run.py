"""`run-ticket`, `status`, `cleanup`, `logs`."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

import click

from swarm_engine.cli.app import pass_settings, store_of
from swarm_engine.cli.output import (
    ago,
    console,
    emit_json,
    err_console,
    ms,
    plain,
    short,
    styled,
    table,
    usage_line,
)
from swarm_engine.cli.progress import Progress
from swarm_engine.config import Settings
from swarm_engine.engine.events import ignore
from swarm_engine.engine.reaper import cleanup
from swarm_engine.engine.session import EngineSession
from swarm_engine.errors import ConflictError, NotFoundError, TicketFailed
from swarm_engine.store import Ticket


@click.command("run-ticket")
@click.argument("ticket_id", type=int)
@click.option("--wait", is_flag=True, help="Run it here and now, and wait for the end.")
@click.option(
    "--max-vms", type=click.IntRange(1, 1024), help="Parallel VMs for this ticket's steps."
)
@click.option("--backend", help="VM backend (process, qemu).")
@click.option("--json", "as_json", is_flag=True, help="Print the final ticket and run as JSON.")
@pass_settings
def run_ticket(
    settings: Settings,
    ticket_id: int,
    wait: bool,
    max_vms: int | None,
    backend: str | None,
    as_json: bool,
) -> None:
    """Run a ticket. Without --wait it is queued (opened) for a running engine.

    Exit status: 0 done, 1 failed or cancelled, 3 no such ticket, 4 not runnable
    (already claimed, or finished: reopen it first).
    """
    if not wait:
        with store_of(settings) as store:
            row = store.tickets.get(ticket_id)
            if row.status == "draft":
                store.tickets.open(ticket_id)
                msg = f"ticket {ticket_id} queued; a running engine ('swarm-engine start') will run it"
            elif row.status == "open":
                msg = f"ticket {ticket_id} is already queued"
            elif row.status in ("claimed", "running"):
                msg = f"ticket {ticket_id} is {row.status} by engine {row.engine_id}"
            else:
                raise ConflictError(
                    f"ticket {ticket_id} is {row.status} (use 'ticket reopen' first)"
                )
        if as_json:
            emit_json({"ticket_id": ticket_id, "message": msg})
        else:
            console.print(msg, markup=False, highlight=False)
        return
    final, run = asyncio.run(_run_and_wait(settings, ticket_id, max_vms, backend, as_json))
    if as_json:
        emit_json(final.as_dict() | {"run": run})
    else:
        _summary(final, run)
    if final.status != "done":
        raise TicketFailed(f"ticket {ticket_id} {final.status}: {final.error}")


async def _run_and_wait(
    settings: Settings, ticket_id: int, max_vms: int | None, backend: str | None, quiet: bool
) -> tuple[Ticket, dict[str, Any]]:
    progress = Progress(err_console if quiet else console, ticket_id)
    session = EngineSession(
        settings, max_vms=max_vms, backend=backend, events=ignore if quiet else progress
    )
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    try:
        async with session:
            with progress if not quiet else contextlib.nullcontext():
                final = await session.run_ticket(ticket_id)
            runs = await session.gate.retrying(session.store.runs.runs_for_ticket, ticket_id)
            run = runs[-1] if runs else {}
            if run:
                run["steps"] = await session.gate.retrying(session.store.runs.steps, run["id"])
            return final, run
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _summary(ticket: Ticket, run: dict[str, Any]) -> None:
    line = f"ticket {ticket.id} {styled(ticket.status)}"
    if run:
        line += f" · run {run['id']} in {ms(run['duration_ms'])}"
        usage = usage_line(run)
        if usage:
            line += f" · {usage}"
    console.print(line)
    if ticket.status == "done":
        console.print(f"result: {plain(short(ticket.result, 300))}", highlight=False)
    elif ticket.error:
        console.print(f"[red]error:[/red] {plain(ticket.error)}", highlight=False)


@click.command()
@click.option("--json", "as_json", is_flag=True)
@pass_settings
def status(settings: Settings, as_json: bool) -> None:
    """Tickets by status, VMs in use, engines, recent runs."""
    with store_of(settings) as store:
        data: dict[str, Any] = {
            "home": str(settings.home),
            "tickets": store.tickets.counts(),
            "vms": store.vms.live(),
            "engines": store.engines.running(),
            "recent_runs": store.runs.recent_runs(10),
        }
        data["usage"] = store.runs.usage_totals()
    if as_json:
        emit_json(data)
        return
    counts = data["tickets"]
    order = ["draft", "open", "claimed", "running", "done", "failed", "cancelled"]
    console.print(f"home: {settings.home}")
    console.print("tickets: " + "  ".join(f"{styled(s)} {counts.get(s, 0)}" for s in order))
    odd = {s: n for s, n in counts.items() if s not in order}
    if odd:
        console.print(
            "tickets with an unknown status: "
            + plain(", ".join(f"{s!r} {n}" for s, n in odd.items()))
        )
    usage = usage_line(data["usage"])
    if usage:
        console.print(f"API usage (all runs): {usage}")
    engines = data["engines"]
    console.print(
        table(
            "engines",
            ["id", "kind", "host", "pid", "state", "max vms", "busy", "up", "heartbeat"],
            (
                (
                    e["id"],
                    e["kind"],
                    e["host"],
                    e["pid"],
                    e["state"],
                    e["max_vms"],
                    e["busy_vms"],
                    ago(e["started_at"]).replace(" ago", ""),
                    ago(e["heartbeat_at"]),
                )
                for e in engines
            ),
        )
        if engines
        else "engines: none running"
    )
    vms = data["vms"]
    console.print(
        table(
            "VMs in use",
            ["id", "backend", "state", "engine", "step exec", "pid", "since"],
            (
                (
                    v["id"],
                    v["backend"],
                    v["state"],
                    v["engine_id"],
                    v["step_execution_id"],
                    v["pid"],
                    ago(v["created_at"]),
                )
                for v in vms
            ),
        )
        if vms
        else "VMs in use: none"
    )
    runs = data["recent_runs"]
    if runs:
        console.print(
            table(
                "recent runs",
                ["run", "ticket", "workflow", "status", "started", "duration", "usage", "error"],
                (
                    (
                        r["id"],
                        r["ticket_id"],
                        r["workflow_name"] or "-",
                        styled(r["status"]),
                        ago(r["started_at"]),
                        ms(r["duration_ms"]),
                        usage_line(r),
                        short(r["error"] or "", 40),
                    )
                    for r in runs
                ),
            )
        )


@click.command("cleanup")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
def cleanup_cmd(settings: Settings, as_json: bool) -> None:
    """Reap VMs whose engine is gone (processes, workspaces), dead engines, expired leases."""
    with store_of(settings) as store:
        report = cleanup(store, settings.home, settings.backend_options)
    if as_json:
        emit_json(report.__dict__)
        return
    console.print(
        f"reaped {len(report.vms)} VM(s), {len(report.engines)} dead engine(s), "
        f"{len(report.folders)} leftover folder(s); re-queued {len(report.requeued)} and failed "
        f"{len(report.failed)} ticket(s) with expired leases"
    )


@click.command()
@click.argument("ticket_id", type=int)
@click.option("--run", "run_id", type=int, help="A specific run (default: the latest).")
@click.option("--step", "step_id", help="Only this step.")
@pass_settings
def logs(settings: Settings, ticket_id: int, run_id: int | None, step_id: str | None) -> None:
    """Print the recorded output of a ticket's steps."""
    with store_of(settings) as store:
        store.tickets.get(ticket_id)
        runs = store.runs.runs_for_ticket(ticket_id)
        if run_id is not None:
            runs = [r for r in runs if r["id"] == run_id]
        if not runs:
            raise NotFoundError(f"ticket {ticket_id} has no run{f' {run_id}' if run_id else ''}")
        steps = store.runs.steps(runs[-1]["id"])
    for s in steps:
        if step_id and s["step_id"] != step_id:
            continue
        console.rule(plain(f"{s['step_id']} (try {s['retry_count'] + 1}) · {s['status']}"))
        path = Path(s["log_path"]) if s["log_path"] else None
        if path and path.is_file():
            click.echo(path.read_text(errors="replace"), nl=False)
        if s["error"]:
            click.echo(f"error: {s['error']}")
        if path and path.parent.is_dir():
            others = sorted(p for p in path.parent.iterdir() if p != path)
            for artifact in others:
                click.echo(f"artifact: {artifact}")
