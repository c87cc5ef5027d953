"""`swarm-engine stop`: stop this host's engines on this store (drain; `--now` aborts)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

import click

from swarm_engine.cli.app import Seconds, example, pass_existing, store_of
from swarm_engine.cli.daemon import ours
from swarm_engine.cli.engine_end import end_path, prune, read_end
from swarm_engine.cli.text import reaped_when, visible
from swarm_engine.config import Settings
from swarm_engine.engine.hostlock import engine_lock_held, engines_holding
from swarm_engine.errors import ConflictError, StoreError, SwarmError
from swarm_engine.vm.proctree import pid_alive, started_at


def _still_running(settings: Settings, pids: list[int], timeout: float) -> str:
    """`stop`'s error when engines outlive its wait: those still draining are aborted by
    another `stop`; those aborting already are past what any `stop` does (a busy or
    silent store delays their exit by at most half a lease_ttl after the abort)."""
    aborting = [p for p in pids if _mark(settings, p) == "aborting"]
    draining = [p for p in pids if p not in aborting]
    said = []
    if draining:
        said.append(
            f"{draining} still draining (their running tickets have not finished):"
            " 'swarm-engine stop' again aborts them"
        )
    if aborting:
        said.append(
            f"{aborting} still aborting (recording their tickets' ends; another stop changes"
            " nothing): 'kill -9 PID' ends one at once, leaving its tickets to be re-queued"
            " when their leases expire and its VMs to 'swarm-engine cleanup'"
        )
    return f"engines still running after {timeout:g}s: " + "; ".join(said)


def _terminate(pid: int) -> bool:
    """SIGTERM to engine `pid`; False when it is gone already (it may exit between being
    found and signalled, or on the first of `stop --now`'s two signals): stopped too."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def _home_engines(settings: Settings) -> list[int]:
    """The pids this home's run folder names (`engine-PID.pid`, written by each engine
    started from it, `--another` ones too), lowest first; `ours` then keeps the live
    ones."""
    pids = []
    with contextlib.suppress(OSError):
        for path in settings.run_dir.glob("engine-*.pid"):
            number = path.name[len("engine-") : -len(".pid")]
            if number.isascii() and number.isdigit() and len(number) < 10:
                pids.append(int(number))
    return sorted(pids)


def _other_host_ids(settings: Settings, rows: list[dict[str, Any]]) -> None:
    """Say which engines this home started run under another host id (`SWARM_HOST_ID`
    or `host_id` set when it started, not now): `stop` looks for this host id's only."""
    hosts = {e.get("pid"): e.get("host") for e in rows}
    for pid in _home_engines(settings):
        if not ours(settings, pid):
            continue
        host = hosts.get(pid)
        if isinstance(host, str) and host != settings.host_id:
            click.echo(
                f"note: this home's engine (pid {pid}) runs as host {visible(host)!r}:"
                f" 'SWARM_HOST_ID={visible(host)} swarm-engine stop' stops it",
                err=True,
            )
        else:
            click.echo(
                f"note: this home's engine (pid {pid}) runs under another host id than"
                f" {settings.host_id!r} (its `engines` row says which)",
                err=True,
            )


def _mark(settings: Settings, pid: int) -> str | None:
    """The stop phase `stop` or the engine marked `pid` with, if any."""
    with contextlib.suppress(OSError):
        return (settings.run_dir / f"engine-{pid}.stopping").read_text(errors="replace").strip()
    return None


def _draining(settings: Settings, pid: int) -> bool:
    """True if engine `pid` (one of this home's, see `ours`) got a stop already: its
    own mark, written when it did (`start`), names a phase, and was written after it
    started (a mark a killed engine left names a pid that may be reused)."""
    mark = settings.run_dir / f"engine-{pid}.stopping"
    try:
        written = mark.stat().st_mtime
        phase = mark.read_text(errors="replace").strip()
    except OSError:
        return False
    began = started_at(pid)
    return phase in ("draining", "aborting") and began is not None and written >= began - 1.0


@click.command(
    short_help="Stop this host's engines (drain; --now aborts).",
    epilog=example("swarm-engine stop --now"),
)
@click.option("--now", is_flag=True, help="Abort running tickets instead of draining.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until engines exit.")
@click.option(
    "--timeout",
    type=Seconds(min=0, max=365 * 86400.0),
    default=600.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for them (then: an error saying what each one still does).",
)
@pass_existing("tickets")
def stop(settings: Settings, now: bool, wait: bool, timeout: float) -> None:
    """Stop the engines of this host that use this store (drain; --now aborts)."""
    try:
        with store_of(settings) as store:
            every = store.engines.running()
            engines = [e for e in every if e["host"] == settings.host_id and e["kind"] == "daemon"]
            gone = [
                e
                for e in store.engines.gone_unreaped(
                    settings.host_id, pid_alive, settings.lease_ttl
                )
                if e["kind"] == "daemon"
            ]
    except StoreError as exc:  # (down, paused, locked, unreadable): an engine's lock is
        # this host's own, so its engines are found and stopped all the same
        why = " ".join(str(exc).split())[:300]
        click.echo(
            f"note: the store did not answer ({why}); stopping the engines that hold its"
            " engine lock on this host, and this home's own (`--another`)",
            err=True,
        )
        engines, gone = [{"pid": pid} for pid in _home_engines(settings)], []
        every = engines
    # a row's pid is anything a writer put there: only engines holding this store's lock,
    # or started from this home, each once; and this user's engines holding the lock
    # whatever the rows say (a pid edited, an engine in another pid namespace)
    pids = list(dict.fromkeys(e["pid"] for e in engines if ours(settings, e["pid"])))
    pids += [p for p in engines_holding(settings.tickets_target, settings.host_id) if p not in pids]
    if not pids:
        if engine_lock_held(settings.tickets_target, settings.host_id):
            raise ConflictError(
                "this store's engine lock on this host is held by a process that is not an "
                "engine of this user (another user's engine is stopped by that user's "
                "'swarm-engine stop'); nothing was stopped"
            )
        click.echo("no engine is running on this host")
        _other_host_ids(settings, every)
        if len(gone) == 1:  # what `status` shows with no process: its row says running
            (e,) = gone
            click.echo(
                f"engine {visible(str(e['id']))}: its process {visible(str(e['pid']))} is not"
                f" on this host (its row says {visible(str(e['state']))});"
                f" {reaped_when(e['reaped_in'])}"
            )
        elif gone:  # one line, however many rows another client wrote (see `status`)
            click.echo(
                f"{len(gone)} engine rows of this host say running, their process not on this"
                " host (see 'swarm-engine status'); each: "
                + reaped_when(min(e["reaped_in"] for e in gone))
            )
        return
    began = {pid: started_at(pid) for pid in pids}  # (whose end file is whose)
    # an engine that drains already aborts at this stop (its own mark says so)
    already = [pid for pid in pids if _draining(settings, pid)]
    aborting = [pid for pid in pids if now or pid in already]
    for pid in pids:
        if _terminate(pid) and now and pid not in already:
            time.sleep(0.1)
            _terminate(pid)
    draining = [pid for pid in pids if pid not in aborting]
    for pid in pids:  # marked now too, for a `stop` that comes before the engine marks it
        with contextlib.suppress(OSError):
            phase = "aborting" if pid in aborting else "draining"
            (settings.run_dir / f"engine-{pid}.stopping").write_text(f"{phase}\n")
    if draining:
        click.echo(
            f"draining {len(draining)} engine(s): {draining} (running tickets finish;"
            " 'swarm-engine stop' again aborts them)"
        )
    if aborting:
        click.echo(
            f"aborting the running tickets of {len(aborting)} engine(s): {aborting} (their"
            " VMs are destroyed; each engine records the runs failed and re-queues the"
            " tickets as far as its store lets it, and says so as it ends)"
        )
    if not wait:
        return
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            raise SwarmError(_still_running(settings, [p for p in pids if pid_alive(p)], timeout))
        time.sleep(0.1)
    ends = {pid: read_end(end_path(settings.run_dir, pid), began[pid]) for pid in pids}
    for pid in pids:
        for what in ("pid", "stopping", "ready"):
            with contextlib.suppress(OSError):
                (settings.run_dir / f"engine-{pid}.{what}").unlink(missing_ok=True)
    # an end is left for the other `stop`s waiting for the same engine (the first to read
    # it removing it made the others say the end was not known): ends are removed once
    # `KEPT_SECONDS` old, here and as an engine starts
    prune(settings.run_dir)
    relay_ends(ends)


def relay_ends(ends: dict[int, tuple[int, str] | None]) -> None:
    """Say how each engine `stop` waited for ended, as the engine itself said it (its last
    line, `engine_end.py`): `stopped` when every one ended well (exit 0); else each
    failing engine's `error:` line, and `stop` exits with the last one's code (6 for an
    engine that could not record its stop: what `stop` cannot know, it does not claim)."""
    several = len(ends) > 1
    failed: list[tuple[int, int, str]] = []
    for pid, end in ends.items():
        if end is None:
            click.echo(
                f"engine (pid {pid}) has exited; how it ended is not known here (no end"
                " recorded in this home's run folder: see its output or log)"
            )
        elif end[0] != 0:
            failed.append((pid, end[0], end[1].removeprefix("error: ")))
        elif several and end[1]:
            click.echo(f"pid {pid}: {visible(end[1])}")
        elif end[1]:
            click.echo(visible(end[1]))
    if not failed:
        click.echo("stopped")
        return
    for pid, _, line in failed[:-1]:
        click.echo(f"error: pid {pid}: {visible(line)}", err=True)
    pid, code, line = failed[-1]
    error = SwarmError(f"pid {pid}: {line}" if several else line)
    error.exit_code = code
    raise error
