"""A gateway for one step attempt: opened before its VM boots, closed after it is gone.

The key is resolved on the host (`agents/claude/keys.py`: the engine's environment, then
`api_key_file`, then `api_key_command` under `[agents.claude]`) and so is the endpoint
(`ANTHROPIC_BASE_URL` of the engine, else `base_url` there, else the public API). What
the step used is written to `model_api.json` in its artifacts folder when it closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path

from swarm_engine.agents.base import ModelApiNeeds
from swarm_engine.agents.claude.keys import resolve_api_key_async, resolve_endpoint
from swarm_engine.agents.claude.settings import HostConfig
from swarm_engine.gateway.meter import Budget, Meter
from swarm_engine.gateway.proxy import Say, StepGateway
from swarm_engine.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

RECORD_NAME = "model_api.json"


@asynccontextmanager
async def open_step_gateway(
    *,
    settings: GatewaySettings,
    host: HostConfig,
    environ: Mapping[str, str],
    needs: ModelApiNeeds,
    artifacts_dir: Path | None = None,
    say: Say | None = None,
) -> AsyncIterator[StepGateway]:
    """A started gateway for one step; `AgentError` (one line) if the key cannot be had or
    no port is free. Closed, and its record written, on exit."""
    api_key = await resolve_api_key_async(host, environ)
    meter = Meter(Budget(needs.max_tokens, needs.max_usd), prices=(host.prices, needs.prices))
    gateway = StepGateway(
        api_key=api_key,
        upstream=resolve_endpoint(host, environ),
        settings=settings,
        meter=meter,
        say=say,
    )
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.close()
        counts = meter.summary()
        if counts["requests"] and say is not None:
            say(
                f"model API: {counts['requests']} requests, {meter.usage.turns} answered with "
                f"usage, {counts['rate_limited']} rate-limited (429), {counts['server_errors']} "
                f"server errors, {counts['refused']} refused by the gateway"
                + (
                    f", {counts['unauthorized']} without the step's token"
                    if counts["unauthorized"]
                    else ""
                )
            )
        if artifacts_dir is not None:
            await asyncio.to_thread(_write_record, artifacts_dir / RECORD_NAME, gateway)


def _write_record(path: Path, gateway: StepGateway) -> None:
    meter = gateway.meter
    doc = {
        "port": gateway.port,
        "budget": asdict(meter.budget),
        "usage": asdict(meter.usage),
        **meter.summary(),
        "stopped": gateway.stop_message,
        "requests_log": gateway.log.records,
        "requests_not_logged": gateway.log.dropped,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=2, default=str))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not write %s: %s", path, exc)
