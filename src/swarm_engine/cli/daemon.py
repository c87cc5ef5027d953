"""`swarm-engine start` and `swarm-engine stop`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from swarm_engine.cli import unwritable
from swarm_engine.cli.app import (
    Seconds,
    Whole,
    example,
    pass_settings_unprepared,
    store_of,
    wait_then_ensure,
)
from swarm_engine.cli.engine_end import end_path, recorded_end
from swarm_engine.cli.logsetup import setup_logging
from swarm_engine.cli.text import (
    ms,
    short,
    stop_unrecorded,
    stopped_after,
    terminal_width,
    visible,
)
from swarm_engine.config import BACKEND_NAMES, Settings
from swarm_engine.engine.daemon import Daemon
from swarm_engine.engine.events import Event
from swarm_engine.engine.fdlimit import ensure_open_files
from swarm_engine.engine.hostlock import (
    hold_engine_lock,
    holding,
)
from swarm_engine.errors import ConflictError, StoreBusyError, StoreError, SwarmError
from swarm_engine.osthreads import name_file_workers
from swarm_engine.signals import Interrupted, Taken, heeded, how, taken_signals
from swarm_engine.store import Store
from swarm_engine.vm.proctree import is_engine, started_at

EXIT_INTERRUPTED = 130
"""A daemonizing `start` stopped by a signal while it waits (Ctrl-C's code)."""
START_TIMEOUT = 15.0
STORE_WAIT = 300.0
"""How much longer than `START_TIMEOUT` `start` waits for an engine that is alive and
only waiting for a busy store (its log says `store busy`, or this command's own read is
refused as busy): a busy store is a delay, not a failure. Past it, the engine is stopped
and `start` fails (it never leaves a running engine behind an error)."""
STOP_WAIT = 30.0
"""How long `start` waits for an engine it gives up on to exit after SIGTERM (a busy
store's lock wait included) before it kills it."""
STORE_BUSY = ("store busy, retrying", "waiting for the store")
"""What an engine logs while it waits for a busy store (`engine/gate.py`)."""
MAX_LINE = 4096
"""The most of a finished ticket's error its progress line looks at (it is cut to the
terminal's width)."""


@click.command(epilog=example("swarm-engine start --max-vms 4"))
@click.option("--foreground", is_flag=True, help="Run in this terminal instead of daemonizing.")
@click.option("--max-vms", type=Whole(1, 1024), metavar="N", help="At most N VMs at once.")
@click.option(
    "--poll-interval",
    type=Seconds(min=0.01, max=3600.0),
    metavar="SECONDS",
    help="Seconds between polls when no change is noticed.",
)
@click.option(
    "--backend",
    type=click.Choice(BACKEND_NAMES),
    metavar="NAME",
    help="Default VM backend: process or qemu.",
)
@click.option("--until-idle", is_flag=True, help="Exit once no ticket is open or running.")
@click.option(
    "--another",
    is_flag=True,
    help="Start even though an engine already runs on this host with this store.",
)
@pass_settings_unprepared
def start(
    settings: Settings,
    foreground: bool,
    max_vms: int | None,
    poll_interval: float | None,
    backend: str | None,
    until_idle: bool,
    another: bool,
) -> None:
    """Start an engine that runs open tickets as they appear.

    Tickets opened by anyone (the CLI, a script, the sqlite3 shell) are picked up. Stop
    it with 'swarm-engine stop' (or Ctrl-C): the first stop drains, a second aborts.
    One engine per host and store is the rule; --another starts a second one.
    """

    def prepare() -> None:
        # before anything is made: an engine short of open files is refused (exit 7), its
        # soft limit raised to the hard one first (inherited by a daemonized engine)
        ensure_open_files(max_vms or settings.max_vms, backend or settings.backend)
        wait_then_ensure(settings)  # a store not up yet is waited for (one line), not exit 6
        if not another:
            _refuse_a_second(settings)

    if not foreground:
        options = {"--max-vms": max_vms, "--poll-interval": poll_interval, "--backend": backend}
        extra = [str(x) for k, v in options.items() if v is not None for x in (k, v)]
        flags = [*(["--until-idle"] if until_idle else []), *(["--another"] if another else [])]
        # a stop signal (Ctrl-C, SIGTERM, SIGHUP) from here until it says `started` ends
        # the wait: the engine it spawned, if it did, is stopped, and it exits 130
        with taken_signals(heeded()) as taken:
            try:
                with taken.raising():
                    prepare()
                    _daemonize(settings, [*extra, *flags], taken)
            except Interrupted as stop:  # (before the spawn: `_daemonize` says its own)
                raise _interrupted(stop.number, "no engine was started") from None
        return
    prepare()
    setup_logging(settings.log_level)  # a daemonized engine logs at INFO (see _daemonize)
    if not another:  # held until this process ends: two `start`s at once cannot both run
        hold_engine_lock(settings.tickets_target, settings.host_id)
    daemon = Daemon(
        settings,
        max_vms=max_vms,
        backend=backend,
        poll_interval=poll_interval,
        until_idle=until_idle,
        events=_FinishedPrinter(),
    )

    stopping = settings.run_dir / f"engine-{os.getpid()}.stopping"
    ready = settings.run_dir / f"engine-{os.getpid()}.ready"

    def say_ready() -> None:  # what the `start` that spawned it waits for (`_daemonize`)
        with contextlib.suppress(OSError):
            ready.write_text("")

    daemon.on_ready = say_ready

    def mark(phase: str) -> None:  # what a later `stop` does to this engine (see `stop`)
        with contextlib.suppress(OSError):
            stopping.write_text(f"{phase}\n")

    # a stop signal from here on, before the loop runs, is a stop too (it killed the
    # engine unsaid, exit -15, while it was starting): noted, then relayed to the loop
    # (the first drains, the second aborts), then, once the loop has ended, only noted
    # until the process exits. One handler all along (`signals.Taken`): no moment of
    # default handlers between (the loop's own put them back as it closed: a second
    # Ctrl-C there was `error: aborted` or exit -2, a SIGTERM exit -15). One the engine
    # was started with ignored (`nohup`: SIGHUP) gets no handler: it stays ignored for
    # the engine's whole life
    stops = heeded()
    with taken_signals(stops) as taken:

        def stop_engine(_: int) -> None:
            mark(daemon.request_stop())

        async def main() -> None:
            restore = use_pidfd_child_watcher()
            try:
                name_file_workers(asyncio.get_running_loop())
                with taken.relayed(asyncio.get_running_loop(), stop_engine):
                    await daemon.run()
            finally:
                restore()

        with unwritable.guard(sys.stdout):  # (output that fails stops no engine's work)
            click.echo(
                f"engine starting: max-vms {daemon.max_vms}, backend {daemon.backend}, "
                f"home {visible(str(settings.home))} (Ctrl-C to stop)"
            )
        try:  # this home's mark of its engine: what `stop` signals (see `ours`)
            settings.run_dir.mkdir(parents=True, exist_ok=True)
            (settings.run_dir / f"engine-{os.getpid()}.pid").write_text(f"{os.getpid()}\n")
        except OSError as exc:
            click.echo(f"warning: no pid file in {settings.run_dir} ({exc.strerror}):"
                       " 'swarm-engine stop' will not find this engine", err=True)  # fmt: skip
        with recorded_end(settings.run_dir) as last_line:  # how it ended, for `stop`
            try:
                asyncio.run(main())
            finally:
                (settings.run_dir / f"engine-{os.getpid()}.pid").unlink(missing_ok=True)
                stopping.unlink(missing_ok=True)
                ready.unlink(missing_ok=True)
                lost = stop_unrecorded(
                    daemon.unrecorded,
                    daemon.end_unrecorded,
                    settings.lease_ttl,
                    daemon.store_trouble,
                )
                if lost is not None and sys.exc_info()[0] is not None:  # said with its error
                    click.echo(f"warning: {lost}", err=True)
            said = stopped_after(daemon.claimed, daemon.aborted)
            if lost is not None:  # records lost: not a clean stop
                raise StoreError(f"{said}, {lost}")
            last_line(said)
    with unwritable.guard(sys.stdout):
        click.echo(said)


def use_pidfd_child_watcher() -> Callable[[], None]:
    """Python 3.11 waits for each sandbox's process with a thread of its own; a pidfd in
    the event loop does it without threads (3.12 does this by itself). Returns what puts
    the process's previous watcher back, for when the loop ends: an engine run inside a
    process that goes on (a test's in-process command) must not leave it a watcher bound
    to a closed loop (its next subprocess, Playwright's say, failed `... is not
    activated`)."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return lambda: None
    try:
        previous = asyncio.get_child_watcher()
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(asyncio.get_running_loop())
        asyncio.set_child_watcher(watcher)
    except (OSError, NotImplementedError):  # no pidfd in this kernel, or a loop policy
        return lambda: None  # without child watchers (uvloop's): keep what there is

    def restore() -> None:
        watcher.close()
        asyncio.set_child_watcher(previous)

    return restore


def ours(settings: Settings, pid: object) -> bool:
    """True if `pid` is an engine of this host on this store that `stop` may signal: a
    live `swarm-engine start` that holds the store's engine lock for this `host_id` (the
    kernel says so, whatever home or name of the store it was started with), or one
    started from this home (`--another` takes no lock): its pid file is in this home's run
    folder, written after it started (only the engine, or the `start` that spawned it,
    writes one there; an `engines` row is any writer's, and a pid file left by a killed
    engine names a pid that may be reused)."""
    if not (isinstance(pid, int) and is_engine(pid)):
        return False
    if holding(settings.tickets_target, settings.host_id, [pid]):
        return True
    try:  # written once the process ran: a pid reused since has started after it
        written = (settings.run_dir / f"engine-{pid}.pid").stat().st_mtime
    except OSError:
        return False
    began = started_at(pid)
    return began is not None and written >= began - 1.0  # (boot time: whole seconds)


def _refuse_a_second(settings: Settings) -> None:
    """A ConflictError when an engine already runs on this host with this store."""
    with store_of(settings) as store:
        engines = store.engines.running()
    for e in engines:
        if (
            e["kind"] == "daemon"
            and e["state"] == "running"
            and e["host"] == settings.host_id
            and ours(settings, e["pid"])
        ):
            raise ConflictError(
                f"engine {e['id']} is already running on this host with this store"
                f" (pid {e['pid']}); 'swarm-engine stop' stops it,"
                " 'swarm-engine start --another' starts a second one"
            )


FINISHED = frozenset({"done", "failed", "cancelled"})


class _FinishedPrinter:
    """One line per finished ticket, for a person watching a foreground engine: cut to
    the terminal's width (`ticket show` has the whole result or error)."""

    def __init__(self) -> None:
        self._width = 80
        self._width_read = -1.0  # monotonic; the width is asked at most once a second
        # (asking costs ~0.2 ms: too much for every line at hundreds of tickets a second)

    def __call__(self, event: Event) -> None:
        if event.kind != "run_finished":
            return
        # a line that cannot be written (a closed pipe, a full disk) is dropped with the
        # rest, never the engine's concern: `start` says so as it ends (`cli/unwritable.py`)
        with unwritable.guard(sys.stdout):
            self._print(event)

    def _print(self, event: Event) -> None:
        ticket, run = event.data["ticket"], event.data["run"]
        if ticket.status not in FINISHED or run.get("attempt_id") != ticket.attempt_id:
            return  # a run this engine stopped: the ticket is not (or no longer) its own
        took = ms(run["duration_ms"])  # "" when not stored or unreadable (any writer's)
        head = f"ticket {ticket.id} {ticket.status}" + (f" in {took}" if took else "")
        title = short(ticket.title, 30)
        outcome = ticket.result if ticket.status == "done" else ticket.error
        if ticket.status != "done" and isinstance(outcome, str) and "\n" in outcome[:MAX_LINE]:
            # an error's lines joined as `ticket show` and every `error:` line join them
            # (its start only: the line is cut to the terminal's width anyway)
            outcome = " / ".join(x.strip() for x in outcome[:MAX_LINE].splitlines() if x.strip())
        now = time.monotonic()
        if now - self._width_read >= 1.0:
            self._width, self._width_read = terminal_width(), now
        room = max(20, self._width - len(head) - len(title) - 5)
        # plain text (control characters shown as \xNN), not rich: one line per ticket at
        # hundreds of tickets a second should cost the engine's loop next to nothing
        # color=True: nothing to strip (`visible` escapes control characters), so click
        # does not ask isatty for each line
        click.echo(f"{head} ({visible(title)}): {visible(short(outcome or '', room))}", color=True)


def _interrupted(number: int, what: str) -> SwarmError:
    """The error of a daemonizing `start` stopped by a signal while it waited: exit 130."""
    error = SwarmError(f"start interrupted ({how(number)}): {what}")
    error.exit_code = EXIT_INTERRUPTED
    return error


def _daemonize(settings: Settings, start_args: list[str], taken: Taken) -> None:
    """Spawn the engine and wait until it has started (`_registered`). The first stop
    signal meanwhile (`taken`, raising) ends the wait; as any error does, it stops the
    engine (`_stop_unstarted`) before `start` says so: no engine is left running behind
    an error. None cuts the spawn from the pid's record (`Taken.held`)."""
    logs = settings.home / "logs"
    logfile = logs / "engine.log"
    probe = settings.run_dir / f".start-{os.getpid()}"
    pid: int | None = None
    try:
        _ready_to_spawn(settings, logs, logfile, probe)
        level = settings.log_level if settings.log_level != "WARNING" else "INFO"
        argv = [
            sys.executable,
            "-m",
            "swarm_engine",
            "--home",
            str(settings.home),
            "--log-level",
            level,
        ]
        argv += [
            "--tickets-db",
            str(settings.tickets_path),
            "--registry-db",
            str(settings.registry_path),
        ]
        argv += ["start", "--foreground", *start_args]
        # posix_spawn, not Popen: the engine outlives this command, which never waits for it
        spawned = time.time()  # a `ready` file older than this is a killed engine's
        with taken.held(), logfile.open("ab") as out, open(os.devnull, "rb") as null:
            logged = out.tell()  # where what the engine writes begins
            pid = os.posix_spawn(
                sys.executable,
                argv,
                dict(os.environ),
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, null.fileno(), 0),
                    (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                    (os.POSIX_SPAWN_DUP2, out.fileno(), 2),
                ],
                setsid=True,
            )
        pidfile = settings.run_dir / f"engine-{pid}.pid"
        try:
            pidfile.write_text(f"{pid}\n")
        except OSError as exc:  # an engine `stop` could not find: not left running
            raise SwarmError(f"cannot start an engine: {pidfile}: {exc.strerror}") from None
        # started: registered, and through its start-up and a first round of claims (it
        # writes `ready` then): an engine that registers and dies on its first write to the
        # store is reported with its error line and exit code, not as started
        engine_id = _registered(settings, pid, spawned, logfile, logged, taken.check)
        taken.check()  # (one whose exception was dropped: see `Taken.check`)
        taken.calm()  # (a signal from here on: the engine has started, and stays)
    except BaseException as exc:  # an error, or a stop signal: no engine left running
        error = exc
        try:
            taken.calm()
        except Interrupted as late:  # (the one signal, come just as the error did)
            error = late
        if pid is not None:
            _stop_unstarted(
                pid,
                settings.run_dir / f"engine-{pid}.pid",
                settings.run_dir / f"engine-{pid}.ready",
            )
        if isinstance(error, Interrupted):
            what = (
                "no engine was started"
                if pid is None
                else f"engine (pid {pid}) stopped before it had started; log: {visible(str(logfile))}"
            )
            raise _interrupted(error.number, what) from None
        raise
    if engine_id is None:  # (exited with 0)
        return
    ready = settings.run_dir / f"engine-{pid}.ready"
    note = (
        ""
        if _written_since(ready, spawned)
        else f" (its start-up not done within {START_TIMEOUT:g}s)"
    )
    unwritable.done(f"engine (pid {pid}) started all the same: 'swarm-engine stop' stops it")
    click.echo(f"engine {engine_id} started (pid {pid}){note}; log: {visible(str(logfile))}")


def _ready_to_spawn(settings: Settings, logs: Path, logfile: Path, probe: Path) -> None:
    """Where the engine's pid file and log go, made and tried before there is an engine."""
    try:
        logs.mkdir(parents=True, exist_ok=True)
        settings.run_dir.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
        logfile.open("ab").close()
    except OSError as exc:
        where = exc.filename or settings.run_dir
        raise SwarmError(f"cannot start an engine: {where}: {exc.strerror}") from None


def _registered(
    settings: Settings,
    pid: int,
    spawned: float,
    logfile: Path,
    logged: int,
    check: Callable[[], None],
) -> str | None:
    """The id of engine `pid` once it registered (and, within `START_TIMEOUT`, wrote its
    ready file); None when it exited with 0 (said so). Raises the engine's own error when
    it exited otherwise, and `SwarmError` when it did not register in time: within
    `START_TIMEOUT`, or, while it is alive and only waiting for a busy store, within
    `STORE_WAIT` more (one `waiting for the store` line on stderr meanwhile). `check` is
    called at each look (it raises to end the wait). The caller stops the engine on any
    error."""
    ready = settings.run_dir / f"engine-{pid}.ready"
    pidfile = settings.run_dir / f"engine-{pid}.pid"
    deadline = time.monotonic() + START_TIMEOUT
    said_waiting = False
    with contextlib.ExitStack() as stack:
        store: Store | None = None
        while True:
            check()
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:  # (its end is said here: not left for a `stop`)
                for left in (pidfile, ready, end_path(settings.run_dir, pid)):
                    left.unlink(missing_ok=True)
                code = os.waitstatus_to_exitcode(status)
                if code == 0:  # (--until-idle with nothing to run; a `stop` at once)
                    click.echo(f"engine (pid {pid}) started and has stopped already (exit 0);"
                               f" log: {visible(str(logfile))}")  # fmt: skip
                    return None
                raise _exited_at_start(code, logfile, logged)
            now = time.monotonic()
            late = now >= deadline
            busy = False
            if _written_since(ready, spawned) or late:
                try:  # (opened here: a store locked now is waited for like the engine)
                    if store is None:
                        store = stack.enter_context(store_of(settings))
                    engine_id = store.engines.find_running(pid, settings.host_id)
                except StoreBusyError:  # this command's own read waited out the lock
                    busy, engine_id = True, None
                # registered: started, unless it waited for the store and its start-up
                # (the ready file) is still to come within the bound
                if engine_id and not (
                    said_waiting
                    and not _written_since(ready, spawned)
                    and now < deadline + STORE_WAIT
                ):
                    return engine_id
                if engine_id:
                    time.sleep(0.05)
                    continue
            if late:
                busy = busy or _waits_for_store(logfile, logged)
                if not busy or now >= deadline + STORE_WAIT:
                    why = (
                        f"while waiting {START_TIMEOUT + STORE_WAIT:g}s for a busy store"
                        if busy
                        else f"within {START_TIMEOUT:g}s"
                    )
                    raise SwarmError(
                        f"engine (pid {pid}) did not register {why}; it was stopped; see {logfile}"
                    )
                if not said_waiting:
                    said_waiting = True
                    say_waiting(pid, START_TIMEOUT + STORE_WAIT)
            time.sleep(0.05)


def say_waiting(pid: int, bound: float) -> None:
    """The one line `start` prints while its engine waits for a busy store."""
    click.echo(
        f"waiting for the store (busy: another client holds its lock); engine pid {pid} is up"
        f" and retrying; waiting up to {bound:g}s in all (Ctrl-C stops it)",
        err=True,
    )


def _waits_for_store(logfile: Path, offset: int) -> bool:
    """Whether the engine's last log lines (from `offset`, the last 4 KiB at most) say it
    is waiting for a busy store (`STORE_BUSY`)."""
    with contextlib.suppress(OSError), logfile.open("rb") as log_in:
        log_in.seek(max(offset, log_in.seek(0, os.SEEK_END) - 4096))
        said = log_in.read(4096).decode(errors="replace")
        return any(mark in said for mark in STORE_BUSY)
    return False


def _stop_unstarted(pid: int, pidfile: Path, ready: Path) -> None:
    """Stop an engine `start` gives up on: SIGTERM, at most `STOP_WAIT` seconds for it
    to exit, then SIGKILL; reaped, and its files in the run folder removed. Nothing is sent
    when it is no child of this process any more (reaped already: its pid may be reused)."""
    try:
        gone = os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return  # reaped already, its files removed
    if not gone:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        until = time.monotonic() + STOP_WAIT
        while not os.waitpid(pid, os.WNOHANG)[0]:
            if time.monotonic() >= until:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.05)
    ended = pidfile.with_suffix(".ended")
    for left in (pidfile, ready, pidfile.with_suffix(".stopping"), ended):  # (its own, if killed)
        left.unlink(missing_ok=True)


def _written_since(path: Path, since: float) -> bool:
    """Whether `path` exists, written at `since` or later (a second of slack for file
    systems with coarse times)."""
    try:
        return path.stat().st_mtime >= since - 1
    except OSError:
        return False


def _exited_at_start(code: int, logfile: Path, offset: int) -> SwarmError:
    """The error of `start` when its engine exited before it registered: the engine's own
    error line (`error: ...`, the last of what it wrote to `logfile` from `offset`, read
    4 KiB at most) and its exit code (4 when another engine runs), else a line naming
    the code and the log."""
    line = ""
    with contextlib.suppress(OSError), logfile.open("rb") as log_in:
        log_in.seek(max(offset, log_in.seek(0, os.SEEK_END) - 4096))
        said = log_in.read(4096).decode(errors="replace").splitlines()
        line = next((x for x in reversed(said) if x.startswith("error: ")), "")
    if not line:
        return SwarmError(f"engine exited at start (code {code}); see {logfile}")
    error = SwarmError(line.removeprefix("error: "))
    error.exit_code = code if code > 0 else 1
    return error
