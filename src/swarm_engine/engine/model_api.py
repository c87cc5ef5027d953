"""The model API side of one step attempt: the tools its VM is shown, its gateway, and the
usage and budget the gateway counted.

An agent kind that runs a host-installed tool (`UsesHostTools`: Claude Code) prepares it
before the VM boots and gets it mounted read-only. An agent that calls the model API from
its VM (`UsesModelApi`: `claude-code`, a `shell` agent with `model_api:`) gets a gateway
for the attempt: its port is forwarded into that VM only, the VM gets the gateway's URL and
the attempt's token, the step is stopped once a request is refused for the budget, and the
step's usage is what the gateway counted. The gateway closes (its token dies) when the
attempt ends, after its VM is destroyed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from swarm_engine.agents.base import (
    Agent,
    LogCallback,
    ModelApiNeeds,
    StepContext,
    StepOutcome,
    uses_host_tools,
    uses_model_api,
)
from swarm_engine.config import Settings
from swarm_engine.errors import AgentError, ConfigError
from swarm_engine.models import AgentSpec, Usage
from swarm_engine.vm.base import VM, VMInfo, VMSpec

if TYPE_CHECKING:
    from swarm_engine.gateway.proxy import StepGateway

UNISOLATED = (
    'the model API gateway is not given to a VM without isolation (process backend, isolation = "none"): '
    "its commands could read other steps' tokens and the engine's key; use bubblewrap or the qemu "
    "backend, or set allow_unisolated = true under [gateway]"
)


def needs_of(agent: Agent, spec: AgentSpec) -> ModelApiNeeds | None:
    return agent.model_api(spec) if uses_model_api(agent) else None


def preflight(
    agent: Agent, spec: AgentSpec, settings: Settings, environ: Mapping[str, str]
) -> None:
    """Before a ticket is claimed: a step that will call the model API needs the host's key,
    and a USD budget needs a price for the model it names. Raises `AgentError` /
    `ConfigError` with one line."""
    needs = needs_of(agent, spec)
    if needs is None:
        return
    from swarm_engine.agents.claude.keys import check_key_source
    from swarm_engine.agents.claude.pricing import price_for
    from swarm_engine.agents.claude.settings import parse_host_config

    host = parse_host_config(settings.agents.get("claude"))
    check_key_source(host, environ)  # (no file read, no command run: the step's)
    priced = needs.model is None or price_for(needs.model, host.prices, needs.prices)
    if needs.max_usd is not None and not priced:
        raise ConfigError(
            f"agent {spec.name!r}: budget.max_usd needs a price for model "
            f"{needs.model!r}; add it under config.prices"
        )


def host_address(info: VMInfo) -> str:
    """Where a VM reaches the host's loopback ports it was given."""
    given = info.extra.get("host_address")
    if given:
        return given
    if info.isolation == "microvm":
        from swarm_engine.vm.qemu.machine import GUEST_FORWARD_IP

        return GUEST_FORWARD_IP
    return "127.0.0.1"


@dataclass
class _Access:
    """`ModelApi` for the agent: the env its VM gets and the usage so far."""

    env: Mapping[str, str]
    usage: Callable[[], Usage]


class StepModelApi:
    """Used by the runner around one step attempt (`async with`)."""

    def __init__(
        self,
        settings: Settings,
        agent: Agent,
        spec: AgentSpec,
        *,
        artifacts_dir: Path,
        log: Callable[[str, str], None],
        environ: Mapping[str, str],
    ) -> None:
        self.settings = settings
        self.agent = agent
        self.spec = spec
        self.needs = needs_of(agent, spec)
        self.artifacts_dir = artifacts_dir
        self.log = log
        self.environ = environ
        self.gateway: StepGateway | None = None
        self.told = Usage()
        """The usage the agent told as it was stopped (`report`), for one without a gateway."""
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> StepModelApi:
        self._check_ports()
        if self.needs is not None:
            from swarm_engine.agents.claude.settings import parse_host_config
            from swarm_engine.gateway.step import open_step_gateway

            self.gateway = await self._stack.enter_async_context(
                open_step_gateway(
                    settings=self.settings.gateway,
                    host=parse_host_config(self.settings.agents.get("claude")),
                    environ=self.environ,
                    needs=self.needs,
                    artifacts_dir=self.artifacts_dir,
                    say=lambda text: self.log(
                        "agent", text if text.endswith("\n") else text + "\n"
                    ),
                )
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def _check_ports(self) -> None:
        reserved = [p for p in self.spec.vm.allowed_ports if self.settings.gateway.reserves(p)]
        if reserved:
            first, last = self.settings.gateway.ports
            raise AgentError(
                f"vm.allowed_ports: port {reserved[0]} is reserved for the model API gateway "
                f"({first}-{last}, [gateway] ports); declare model_api instead"
            )

    async def vm_spec(self, spec: VMSpec) -> VMSpec:
        """The VM the step needs: its tools mounted, the gateway's port forwarded."""
        if uses_host_tools(self.agent):
            log: LogCallback = self.log
            mounts = await self.agent.prepare(self.spec, log)
            spec = dataclasses.replace(spec, mounts=(*spec.mounts, *mounts))
        if self.gateway is not None:
            ports = (*spec.allowed_ports, self.gateway.port)
            spec = dataclasses.replace(spec, network=True, allowed_ports=ports)
        return spec

    def bind(self, vm: VM) -> _Access | None:
        """The gateway as the agent in `vm` sees it. `AgentError` for an unisolated VM."""
        if self.gateway is None:
            return None
        info = vm.info()
        if info.isolation == "none" and not self.settings.gateway.allow_unisolated:
            raise AgentError(UNISOLATED)
        return _Access(env=self.gateway.vm_env(host_address(info)), usage=self.gateway.usage)

    async def run(self, ctx: StepContext) -> StepOutcome:
        """The agent's run, stopped (its commands killed) as soon as the gateway refuses
        a request for the budget."""
        if self.gateway is None:
            return await self.agent.run(ctx)
        work = asyncio.create_task(self.agent.run(ctx))
        stop = asyncio.create_task(self.gateway.exceeded.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not work.done():
                work.cancel()
            await asyncio.gather(work, stop, return_exceptions=True)
        if work.cancelled():  # stopped for the budget (`settle` says why)
            return StepOutcome(exit_code=1, error=self.gateway.stop_message)
        return work.result()

    def report(self, usage: Usage) -> None:
        """`StepContext.on_usage`: the agent's usage so far, as it is stopped."""
        self.told = usage

    def so_far(self) -> Usage:
        """The usage of a step stopped from outside, recorded with its `cancelled` row:
        what its gateway counted (after it closed: every answer it read), else what the
        agent told last (`report`). Its `stop_reason` is None (the row says `cancelled`)."""
        usage = self.gateway.usage() if self.gateway is not None else dataclasses.replace(self.told)
        usage.stop_reason = None
        return usage

    def settle(self, outcome: StepOutcome) -> StepOutcome:
        """After the gateway closed: the step's usage is what it counted; a step whose
        request was refused for the budget failed with that reason."""
        if self.gateway is None:
            return outcome
        usage = self.gateway.usage()
        usage.stop_reason = outcome.usage.stop_reason
        error = outcome.error
        if self.gateway.exceeded.is_set():
            usage.stop_reason = "budget_exceeded"
            error = self.gateway.stop_message
        return dataclasses.replace(
            outcome,
            usage=usage,
            error=error,
            exit_code=outcome.exit_code if error is None else (outcome.exit_code or 1),
        )
