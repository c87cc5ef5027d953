"""`run-ticket`, `status`, `cleanup`, `logs`."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import click

from swarm_engine.cli.app import (
    TICKET_ID,
    IdCommand,
    Whole,
    ensure_home,
    example,
    pass_existing,
    pass_settings,
    registry_of,
    require_home,
    store_label,
    store_of,
)
from swarm_engine.cli.output import (
    Col,
    ago,
    console,
    emit_json,
    err_console,
    label,
    ms,
    plain,
    say,
    short,
    styled,
    table,
    usage_line,
    visible,
)
from swarm_engine.cli.text import left_running, reaped_when
from swarm_engine.config import BACKEND_NAMES, Settings
from swarm_engine.errors import StoreError, SwarmError, TicketFailed
from swarm_engine.records import shown
from swarm_engine.signals import Taken, heeded, how, taken_signals

if TYPE_CHECKING:  # the engine is imported by the commands that run it, not by `status`
    from swarm_engine.engine.session import EngineSession
    from swarm_engine.store import Ticket


@click.command("run-ticket", cls=IdCommand, epilog=example("swarm-engine run-ticket 1 --wait"))
@click.argument("ticket_id", type=TICKET_ID)
@click.option("--wait", is_flag=True, help="Run it here and now, and wait for the end.")
@click.option(
    "--max-vms",
    type=Whole(1, 1024),
    metavar="N",
    help="Parallel VMs for this ticket's steps.",
)
@click.option(
    "--backend",
    type=click.Choice(BACKEND_NAMES),
    metavar="NAME",
    help="VM backend: process or qemu.",
)
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

    With --wait the ticket runs in this process: Ctrl-C (or SIGTERM, or SIGHUP: its
    terminal closed) stops it, its VMs are destroyed and it is recorded failed
    ('interrupted'); it is not re-queued, so no engine runs it again until you reopen
    it ('swarm-engine ticket reopen ID'). A signal ignored as it starts stays ignored
    ('nohup swarm-engine run-ticket ID --wait' outlives its terminal).

    Exit status: 0 done, 1 failed or cancelled, 3 no such ticket, 4 not runnable
    (already claimed, or finished: reopen it first), 130 interrupted.
    """
    if not wait:
        from swarm_engine.service.tickets import queue
        from swarm_engine.vm.proctree import pid_alive

        with store_of(settings) as store:

            def reclaim() -> None:  # (what `cleanup` and every engine do: its VMs here first)
                from swarm_engine.engine.reaper import ReapReport, reclaim_expired, vm_fence

                fence = vm_fence(settings.home, settings.host_id, settings.backend_options)
                reclaim_expired(store, ReapReport(), fence)

            msg = queue(store, ticket_id, host=settings.host_id, alive=pid_alive, reclaim=reclaim)
        if as_json:
            emit_json({"ticket_id": ticket_id, "message": msg})
        else:
            console.print(visible(msg), markup=False, highlight=False)
        return
    import asyncio

    # a stop signal from here on is the command's (the process's entry took them first:
    # one while the CLI loaded ended it before its claim, exit 130): noted until its loop
    # runs, then relayed to it (a stop before the claim too: the ticket is left as it was),
    # then, once the loop has ended, only noted (the run is over: nothing to stop). One
    # handler all along (`signals.Taken`): no moment of default handlers between (the
    # loop's own put them back as it closed: a SIGTERM then was exit -15). One ignored as
    # it started (`nohup`) gets no handler: it stays ignored
    with taken_signals(heeded()) as taken:
        final, run = asyncio.run(
            _run_and_wait(settings, ticket_id, max_vms, backend, as_json, taken)
        )
    if as_json:
        emit_json(final.as_dict() | {"run": run})
    else:
        _summary(final, run)
    if final.status != "done":
        # a ticket the store kept live while its run ended (`ended unrecorded: ...`) has
        # no error of its own: its run's says why
        why = final.error if final.error is not None else run.get("error")
        raise TicketFailed(f"ticket {ticket_id} {final.status}: {why}")


async def _run_and_wait(
    settings: Settings,
    ticket_id: int,
    max_vms: int | None,
    backend: str | None,
    quiet: bool,
    taken: Taken,
) -> tuple[Ticket, dict[str, Any]]:
    """Run the ticket here; each stop signal `taken` gets, those noted before the loop
    ran first, stops it (before its claim: the ticket is left as it was)."""
    import asyncio

    from swarm_engine.cli.progress import Progress
    from swarm_engine.engine.events import ignore
    from swarm_engine.engine.session import EngineSession
    from swarm_engine.osthreads import name_file_workers
    from swarm_engine.service.runs import runs_with_steps

    progress = Progress(err_console if quiet else console, ticket_id)
    session = EngineSession(
        settings, max_vms=max_vms, backend=backend, events=ignore if quiet else progress
    )

    def abort_error(how: str) -> str:
        return (
            f"interrupted: run-ticket --wait was stopped ({how}) during the run;"
            " 'swarm-engine ticket reopen {id}' queues it again"
        )

    session.runner.abort_error = abort_error("Ctrl-C")
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    name_file_workers(loop)

    def interrupted(_why: str = "") -> None:  # the run is aborted: recorded failed
        session.abort()
        main.cancel()

    def signalled(how: str) -> None:
        session.runner.abort_error = abort_error(how)
        interrupted()

    session.on_gone = interrupted  # the store's file went away: nothing more is written
    lost: list[str] = []  # why the store was given up (`watch_store`)

    async def watch_store() -> None:
        # once the store has been silent for a whole lease_ttl while a call waits on it,
        # the ticket's lease has run out unrenewed: the store is given up at once (every
        # call waiting on it ends), the run stopped, and the command ends, once
        silent, said = await session.gate.given_up_when_silent(settings.lease_ttl)
        past = "past the ticket's lease" if session.claiming else "a whole lease"
        why = (
            f"the store has not answered for {silent:.0f}s, {past}"
            f" (lease_ttl {settings.lease_ttl:g}s): {said}"
        )
        lost.append(why)
        session.runner.abort_error = f"run-ticket --wait gave up on the store: {why}"
        session.abort()
        main.cancel()

    def on_stop(number: int) -> None:
        signalled(how(number))

    with taken.relayed(loop, on_stop):  # (those noted before: now, before the claim)
        watch = asyncio.create_task(watch_store(), name="store-watch")
        try:
            async with session:
                with progress if not quiet else contextlib.nullcontext():
                    final = await session.run_ticket(ticket_id)
                newest = await session.gate.retrying(
                    runs_with_steps, session.store, ticket_id, limit=1
                )  # (its newest steps, their values within a view's budget)
                return final, newest.items[-1] if newest.items else {}
        except (asyncio.CancelledError, SwarmError) as exc:
            # one line says what became of the ticket: the store given up (exit 6, whatever
            # error its calls ended with meanwhile), or an interrupt (exit 130)
            from swarm_engine.cli.main import EXIT_INTERRUPTED
            from swarm_engine.errors import StoreGoneError

            if session.gone is not None:  # exit 6, as any store error
                raise StoreGoneError(f"run-ticket stopped: {session.gone}") from None
            if lost:  # exit 6: what became of the ticket is the reclaim's, once it answers
                left = _unanswered(session, ticket_id)
                raise StoreError(f"run-ticket stopped: {lost[0]}; {left}") from None
            if not isinstance(exc, asyncio.CancelledError):
                raise
            line = visible(_interrupted(settings, session, ticket_id))
            with contextlib.suppress(OSError):  # (SIGHUP: the terminal may be gone)
                err_console.print(line, markup=False, highlight=False, soft_wrap=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        finally:
            watch.cancel()


def _unanswered(session: EngineSession, ticket_id: int) -> str:
    """What a store given up left of `ticket_id` (the end of `run-ticket`'s line)."""
    if not session.claiming:
        return f"ticket {ticket_id} was not claimed: it is left as it was, not run"
    if not session.claimed:  # the claim's write was under way: it may have been taken
        return (
            f"ticket {ticket_id} may have been claimed: if so, once the store answers,"
            " its expired lease is reclaimed (by an engine or 'swarm-engine cleanup')"
        )
    return (
        f"ticket {ticket_id}'s run could not be recorded: once the store answers, its"
        " expired lease is reclaimed (by an engine or 'swarm-engine cleanup')"
    )


def _interrupted(settings: Settings, session: EngineSession, ticket_id: int) -> str:
    """The one line `run-ticket --wait` ends with when interrupted: what became of the
    ticket."""
    runner = session.runner
    if ticket_id in runner.recorded_aborts:
        return (
            f"ticket {ticket_id} failed: interrupted; 'swarm-engine ticket reopen {ticket_id}'"
            " queues it again"
        )
    if runner.unrecorded:
        return "warning: " + left_running(
            list(runner.unrecorded), "recorded failed", settings.lease_ttl
        )
    if ticket_id in runner.abort_refused:
        return f"interrupted: {runner.abort_outcome(ticket_id)}"
    if session.claiming:  # the claim's write was under way: it may have been recorded
        return (
            f"interrupted while claiming ticket {ticket_id}: if the claim was recorded, the"
            f" ticket is re-queued when its lease expires (within {settings.lease_ttl:g}s)"
            " by any running engine or 'swarm-engine cleanup'"
        )
    return f"interrupted before ticket {ticket_id} was claimed: it is left as it was, not run"


def _summary(ticket: Ticket, run: dict[str, Any]) -> None:
    line = f"ticket {ticket.id} {styled(ticket.status)}"
    if run:
        line += f" · run {run['id']} in {ms(run['duration_ms'])}"
        usage = usage_line(run)
        if usage:
            line += f" · {usage}"
    console.print(line)
    # one line each, however long (a pipe's reader, a script, looks for `error:`): the
    # terminal wraps it, never rich (it broke it at 80 or 140 columns, its text split)
    if ticket.status == "done":
        result = plain(short(ticket.result, 300))
        console.print(f"result: {result}", highlight=False, soft_wrap=True)
    elif ticket.error:
        console.print(f"[red]error:[/red] {plain(ticket.error)}", highlight=False, soft_wrap=True)


def sandbox(backend: Any, isolation: Any) -> str:
    """A VM's backend and what isolated it: `process/bwrap`, `process/none`, `qemu`."""
    return f"{backend}/{isolation}" if isolation else str(backend)


@click.command(
    short_help="Tickets, engines, VMs, recent runs; where the store is.",
    epilog=example("swarm-engine status"),
)
@click.option(
    "--init", is_flag=True, help="Create the home and its databases if they do not exist yet."
)
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
@click.pass_obj
def status(settings: Settings, init: bool, as_json: bool) -> None:
    """Tickets by status, engines, VMs in use, recent runs; where the store is."""
    if init:
        ensure_home(settings)
    else:
        require_home(settings, ("tickets",))
    from swarm_engine.service import runs as run_service
    from swarm_engine.service import vms as vm_service
    from swarm_engine.vm.proctree import pid_alive

    with store_of(settings) as store:
        data: dict[str, Any] = {
            "home": str(settings.home),
            "tickets_db": store_label(settings.tickets_target),
            "registry_db": store_label(settings.registry_target),
            "host": settings.host_id,
            "hosts": store.engines.hosts(),
            "tickets": store.tickets.counts(),
            "vms": vm_service.live(store),
            "engines": vm_service.engines(store, settings.host_id, pid_alive, settings.lease_ttl),
            "recent_runs": run_service.recent(store, 10),
        }
        data["usage"] = run_service.usage_totals(store)
    if as_json:
        emit_json(data)
        return
    counts = data["tickets"]
    order = ["draft", "open", "claimed", "running", "done", "failed", "cancelled"]
    say(f"home: {plain(settings.home)}   ticket store: {plain(data['tickets_db'])}")
    console.print("tickets: " + "  ".join(f"{styled(s)} {counts.get(s, 0)}" for s in order))
    odd = {s: n for s, n in counts.items() if s not in order}
    if odd:
        console.print(
            "tickets with an unknown status: "
            + plain(", ".join(f"{shown(s)} {n}" for s, n in odd.items()))
        )
    usage = usage_line(data["usage"])
    if usage:
        console.print(f"API usage (all runs): {usage}")
    for defect in data["usage"].get("defects", []):
        console.print(f"[yellow]{plain(defect)}[/yellow]")
    hosts = data["hosts"]
    if len(hosts) > 1 or any(h["host"] != settings.host_id for h in hosts):
        console.print(
            table(
                "hosts",
                [Col("host", flex=True, min=8), "engines", "slots", "VMs"],
                ((h["host"], h["engines"], h["slots"], h["vms"]) for h in hosts),
            )
        )
    engines = data["engines"]
    console.print(
        table(
            "engines",
            [
                Col("id", flex=True, min=12),
                "kind",
                Col("host", flex=True, min=8),
                "pid",
                "state",
                "max vms",
                "busy",
                "up",
                "heartbeat",
            ],
            (
                (
                    e["id"],
                    e["kind"],
                    e["host"],
                    e["pid"],
                    f"{e['state']}, no process" if e.get("process_seen") is False else e["state"],
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
    for e in engines:
        if e.get("process_seen") is False:
            console.print(
                f"engine {label(e['id'])}: its process {label(e['pid'])} is not on this host"
                f" (killed?); {reaped_when(e['reaped_in'])}",
                highlight=False,
            )
        if e["state"] == "dead" and e["recorded_state"] != "dead":
            console.print(
                f"engine {label(e['id'])}: its process {label(e['pid'])} on this host is gone"
                f" (its row says {label(e['recorded_state'])}); 'swarm-engine cleanup' records"
                " it dead",
                highlight=False,
            )
    vms = data["vms"]
    console.print(
        table(
            "VMs in use",
            [
                Col("id", flex=True, min=12),
                "backend",
                "state",
                Col("engine", flex=True, min=12),
                "step exec",
                "pid",
                "since",
            ],
            (
                (
                    v["id"],
                    sandbox(v["backend"], v.get("isolation")),
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
        with_usage = any(usage_line(r) for r in runs)
        console.print(
            table(
                "recent runs",
                [
                    Col("run", justify="right"),
                    Col("ticket", justify="right"),
                    Col("workflow", flex=True, min=8),
                    "status",
                    "started",
                    "duration",
                    *([Col("usage", flex=True, min=10)] if with_usage else []),
                    Col("error", flex=True, min=10),
                ],
                (
                    (
                        r["id"],
                        r["ticket_id"],
                        r["workflow_name"] or "-",
                        styled(r["status"]),
                        ago(r["started_at"]),
                        ms(r["duration_ms"]),
                        *([usage_line(r)] if with_usage else []),
                        short(r["error"] or "", 200)
                        if "error" not in r.get("left_out", ())
                        else f"(left out here; whole: swarm-engine ticket show {r['ticket_id']}"
                        f" --before {r['id'] + 1} --runs 1 --json)",
                    )
                    for r in runs
                ),
            )
        )
        unisolated = [r for r in runs if r.get("unisolated_steps")]
        if unisolated:
            console.print(
                "[yellow]warning:[/yellow] run(s) "
                + ", ".join(str(r["id"]) for r in unisolated)
                + ' ran steps unisolated (isolation = "none")'
            )


@click.command(
    "cleanup",
    short_help="Reap what dead engines left behind.",
    epilog=example("swarm-engine cleanup"),
)
@click.option("--json", "as_json", is_flag=True, help="Print what was cleaned up as JSON.")
@pass_existing("tickets")
def cleanup_cmd(settings: Settings, as_json: bool) -> None:
    """Reap what dead engines left: VMs, their processes and folders (a QEMU warm pool's
    too, when no engine of this host runs), expired leases."""
    from swarm_engine.engine.reaper import cleanup

    def registered(name: str) -> bool:  # asked only of an older version's staging folder
        with registry_of(settings) as registry:
            return registry.has_agent(name)

    with store_of(settings) as store:
        report = cleanup(
            store,
            settings.home,
            settings.host_id,
            settings.backend_options,
            store_target=settings.tickets_target,
            silent_after=settings.lease_ttl,
            packages_dir=settings.packages_dir,
            agent_registered=registered,
        )
    from swarm_engine.cli.engine_files import remove_gone_engine_files

    engine_files = remove_gone_engine_files(settings.run_dir)
    if as_json:
        emit_json({**report.__dict__, "engine_files": engine_files})
        return
    console.print(
        f"reaped {len(report.vms)} VM(s), {len(report.engines)} dead engine(s), "
        f"{len(report.folders)} leftover folder(s); stopped {len(report.helpers)} leftover VM "
        f"helper process(es); re-queued {len(report.requeued)} and failed "
        f"{len(report.failed)} ticket(s) with expired leases; closed {len(report.runs)} run(s)"
        " no engine held; removed "
        f"{len(report.cgroups)} "
        f"leftover memory cgroup folder(s), {len(report.packages)} old agent package copy(ies) or staging folder(s)",
        soft_wrap=True,  # one line, also in a pipe: its phrases are grepped
    )
    if engine_files:  # (a line of its own: the summary above is long enough to wrap)
        shown_names = ", ".join(engine_files[:6]) + (
            f" and {len(engine_files) - 6} more" if len(engine_files) > 6 else ""
        )
        console.print(
            f"removed {len(engine_files)} pid/ready file(s) of gone engines: {shown_names}",
            highlight=False,
            soft_wrap=True,
        )
    for e in report.waiting:
        console.print(
            f"engine {label(e['id'])}: its process {label(e['pid'])} is not on this host, but"
            f" it heartbeated less than a lease ago: not reaped yet; {reaped_when(e['reaped_in'])}",
            highlight=False,
        )
