"""Running the API: uvicorn on a socket bound before it starts, so that an address in use
is one clear error (and `--port 0` tells the port it got)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING

from swarm_engine.api.auth import check_exposure
from swarm_engine.config import Settings
from swarm_engine.errors import StoreError, SwarmError, UsageError
from swarm_engine.signals import heeded, noted_signals

if TYPE_CHECKING:
    from swarm_engine.api.deps import Server

GRACEFUL_SECONDS = 5
"""On stop, open requests get this long to finish (then uvicorn cancels them)."""
LOG_DRAIN_SECONDS = 2.0
"""On stop, open log responses get this long to end: a download, or a stream whose client
stopped reading (its socket's buffers full), still going then is dropped (`api/logs.py`),
well before `GRACEFUL_SECONDS`, so none is cancelled with a traceback."""
BACKLOG = 2048


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host`:`port` (0: any free port). `UsageError` when the
    address cannot be used (unknown name, in use, not this machine's)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"cannot listen on {host}: {exc}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)  # connections wait from now on, until the server accepts them
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    settings: Settings,
    host: str,
    port: int,
    token: str | None,
    *,
    ready: Callable[[str], None] = lambda url: None,
) -> str | None:
    """Serve the API until SIGINT, SIGTERM or SIGHUP (each one the process was not started
    with ignored). `ready(url)` is called once it listens. Returns "SIGINT", "SIGTERM" or
    "SIGHUP" when that signal stopped it (open requests were given `GRACEFUL_SECONDS` to
    end), None when it stopped otherwise.
    `UsageError` for a non-loopback `host` without `token`, or an address that cannot be
    used; `SwarmError` when the server stopped because its SQLite store's or registry's
    file was deleted or replaced while it served it (`Server.check_file`)."""
    check_exposure(host, token)
    import uvicorn

    from swarm_engine.api.app import create_app
    from swarm_engine.api.protocol import (
        Bounds,
        PerAddress,
        bounded,
        connection_cap,
        quiet_accept_errors,
    )

    class QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn's, but for the stop signals this process does not ignore only: a
            # SIGINT ignored as the server started (a background job of a
            # non-interactive shell, scripts/demo.sh) or a SIGHUP (`nohup`) stays ignored
            # for its whole life, as POSIX shells mean it to; SIGHUP otherwise (its
            # terminal closed) is a stop as SIGTERM is (uvicorn takes SIGINT and SIGTERM
            # only: SIGHUP killed the server unsaid, exit -1); and the signals caught are
            # not sent again at its end (`stops` has them)
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            found = {sig: signal.signal(sig, self.handle_exit) for sig in listened}
            try:
                yield
            finally:
                for sig, handler in found.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # the first stop signal names the stop; a second one changes nothing:
            # uvicorn's force exit on a second SIGINT skipped the app's shutdown, whose
            # task was then cancelled with a traceback, and the stop is bounded anyway
            # (`LOG_DRAIN_SECONDS`, `GRACEFUL_SECONDS`)
            stops.append(sig)
            self.should_exit = True

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            loop = asyncio.get_running_loop()
            loop.set_exception_handler(quiet_accept_errors(bounds.notices))
            if terminated:  # a stop signal noted before uvicorn listened for its own
                self.handle_exit(terminated[0], None)
            await super().startup(sockets)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # open log streams end their responses (within a poll), before uvicorn would
            # cancel them at `GRACEFUL_SECONDS`, with a traceback each (api/logs.py)
            state.stop(LOG_DRAIN_SECONDS)
            await super().shutdown(sockets)

    stops: list[int] = []  # the stop signals uvicorn caught, in order
    listened = heeded()
    terminated: list[int] = []
    sock = bind(host, port)
    try:
        app = create_app(settings, token)
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        bounds = Bounds(
            settings.request_head_timeout,
            settings.request_body_timeout,
            connection_cap(settings.api_max_connections, open_files),
            PerAddress(settings.api_max_connections_per_address),
        )
        config = uvicorn.Config(
            app,
            http=bounded(bounds),
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=GRACEFUL_SECONDS,
        )
        server = QuietServer(config)
        state = app.state.server
        state.on_gone = lambda why: setattr(server, "should_exit", True)
        stop = threading.Event()
        threading.Thread(  # an idle server too sees its store file go (within a heartbeat)
            target=_watch, args=(state, stop, settings.heartbeat_interval),
            name="store-file-watch", daemon=True,
        ).start()  # fmt: skip
        # a stop signal before uvicorn listens for its own is noted, and stops it once it
        # starts (the default would end the process unsaid); SIGINT too: Ctrl-C is how a
        # server in a terminal is stopped, not an abort. Its ready line is said within:
        # a stop right after it is the server's stop (it was the entry point's `before it
        # served`). (Signals reach the main thread only; a server run on another has none)
        try:
            with noted_signals(listened) as terminated:
                ready(url_of(sock))
                server.run(sockets=[sock])
        finally:
            stop.set()
        if state.gone is not None:
            raise SwarmError(f"API stopped: {state.gone}")
        if not server.started:
            raise SwarmError("the API server did not start (see the log above)")
        caught = stops or terminated
        if not caught:
            return None
        return signal.Signals(caught[0]).name
    finally:
        sock.close()


def _watch(state: Server, stop: threading.Event, every: float) -> None:
    """Every `every` seconds until `stop`: the store and registry files are still the
    ones served."""
    while not stop.wait(every):
        with contextlib.suppress(StoreError):  # (it stops the server when it is not)
            state.check_file()
