"""`swarm-engine serve`: the HTTP API (docs/api.md)."""

from __future__ import annotations

import os

import click

from swarm_engine.cli.app import Whole, ensure_home, example, wait_for_store
from swarm_engine.config import Settings


@click.command(
    short_help="Serve the HTTP API (tickets, runs, logs, VMs, metrics).",
    epilog=example(
        "swarm-engine serve",
        "SWARM_API_TOKEN=$(openssl rand -hex 24) swarm-engine serve --host 0.0.0.0",
    ),
)
@click.option(
    "--host", default="127.0.0.1", show_default=True, metavar="ADDRESS",
    help="Address to listen on; any but a loopback one needs a token.",
)  # fmt: skip
@click.option(
    "--port", type=Whole(0, 65535), default=8080, show_default=True, metavar="PORT",
    help="Port to listen on (0: any free one; the address is printed).",
)  # fmt: skip
@click.option(
    "--token", envvar="SWARM_API_TOKEN", metavar="TOKEN",
    help="Bearer token every request must carry [env SWARM_API_TOKEN, which keeps it out"
    " of the process list]. Required unless --host is a loopback address.",
)  # fmt: skip
@click.pass_obj
def serve(settings: Settings, host: str, port: int, token: str | None) -> None:
    """Serve the HTTP API until Ctrl-C: tickets, runs and steps, live logs (server-sent
    events), VMs, engines, hosts, agents, workflows, usage, and /metrics for Prometheus.

    It listens on 127.0.0.1 by default; on any other address it refuses to start
    without a bearer token. The OpenAPI schema is at /openapi.json.
    """
    from swarm_engine.api.auth import check_exposure
    from swarm_engine.api.server import serve as run
    from swarm_engine.service.triggers import check_secrets

    if token is None and os.environ.get("SWARM_API_TOKEN") == "":
        token = ""  # (click reads an empty variable as unset: refused below, as --token "")
    check_exposure(host, token)  # before the home is made: a refusal changes nothing
    check_secrets(settings)
    wait_for_store(settings)  # a store not up yet is waited for (one line), not an exit 6
    ensure_home(settings)

    def ready(url: str) -> None:
        guard = "bearer token required" if token else "no token: this machine only"
        click.echo(f"serving the API on {url} ({guard}; Ctrl-C stops it)", err=True)

    why = run(settings, host, port, token, ready=ready)
    if why is not None:
        how = "Ctrl-C" if why == "SIGINT" else why
        click.echo(f"API stopped ({how}): open requests were given their time to end", err=True)
